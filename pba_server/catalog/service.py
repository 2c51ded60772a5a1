"""Registers the catalog's operations: importing this module imports every room
that declares some (``bootstrap.load_operations`` does). Import what you call
from the room itself, not from here."""

from pba_server.catalog import (  # noqa: F401
    currencies,
    plan_migrations,
    plans,
    price_lists,
    promotions,
    quotes,
    resources,
    templates,
)
