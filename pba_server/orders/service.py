"""Registers the orders' operations: importing this module imports every room
that declares some (``bootstrap.load_operations`` does). Import what you call
from the room itself, not from here.

``OrderPlace`` validates and prices the order, commits it and returns at once;
its workflow runs in the background (:mod:`pba_server.orders.engine`).
``OrderGet`` shows the current step and the history of every step.
"""

from pba_server.orders import decisions, placing, queries, workflows  # noqa: F401
