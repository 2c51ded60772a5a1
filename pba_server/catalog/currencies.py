"""The currencies plans, price lists and accounts may use (``CurrencyList``)."""

from __future__ import annotations

from pba_server.catalog.types import (
    CurrencyInfo,
    CurrencyPage,
)
from pba_server.core import paging
from pba_server.core.context import CallContext
from pba_server.core.money import MINOR_UNITS
from pba_server.core.operations import ANY_ROLE, operation


@operation("CurrencyList", roles=ANY_ROLE)
def currency_list(
    ctx: CallContext, *, offset: int = 0, limit: int = paging.DEFAULT_LIMIT
) -> CurrencyPage:
    """The ISO 4217 currencies plans, price lists and accounts may use, with the
    number of decimals amounts in each are rounded to (half-up, once per line)."""
    every = [CurrencyInfo(code, units) for code, units in sorted(MINOR_UNITS.items())]
    items, total = paging.sliced(every, offset, limit)
    return CurrencyPage(items, total, offset, limit)
