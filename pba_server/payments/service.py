"""The payments operations, registered by importing their rooms.

``bootstrap.load_operations`` imports this module; the operations live in
:mod:`~pba_server.payments.plugins`, :mod:`~pba_server.payments.methods` and
:mod:`~pba_server.payments.charges` (see the package docstring). Import what
you need from those rooms, not from here.
"""

from __future__ import annotations

from pba_server.payments import charges, methods, plugins  # noqa: F401
