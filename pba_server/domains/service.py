"""Registers the domains' operations: importing this module imports every room
that declares some (``bootstrap.load_operations`` does), and the builtin
processing module ``domains`` (:mod:`pba_server.domains.module`). Import what
you call from the room itself, not from here."""

from pba_server.domains import (  # noqa: F401
    availability,
    module,
    monitors,
    records,
    tlds,
    updates,
)
