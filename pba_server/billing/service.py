"""Importing this module registers every billing operation (bootstrap's
``load_operations`` does). It holds no code: call the rooms themselves
(see :mod:`pba_server.billing`)."""

from pba_server.billing import (  # noqa: F401
    balances,
    credit_notes,
    invoices,
    numbering,
    payments,
    statements,
    tax_rules,
    terms,
)
