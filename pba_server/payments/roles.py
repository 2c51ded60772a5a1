"""Who may call the payments operations."""

from __future__ import annotations

ADMIN = frozenset({"admin"})
BILLING = frozenset({"billing"})
READERS = frozenset({"billing", "sales", "support", "readonly"})
