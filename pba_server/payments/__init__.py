"""Online payments: plugin instances, stored payment methods, gateway charges
and their reconciliation. Money reaches the ledger only through billing's
payment functions."""
