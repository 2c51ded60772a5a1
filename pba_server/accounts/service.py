"""Registers the accounts' operations: importing this module imports every room
that declares some (``bootstrap.load_operations`` does). Import what you call
from the room itself, not from here."""

from pba_server.accounts import contacts, keys, standing, tree, users  # noqa: F401
