"""Line pricing and tax: pure functions of values, no database.

Rounding happens per line, once, in the currency's minor unit (half-up, via
:func:`pba_server.core.money.quantize`): the invoice totals are sums of the
rounded line amounts, so a line's net + tax always equals its total.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from pba_server.core.money import quantize

HUNDRED = Decimal(100)
REVERSE_CHARGE_NOTE = (
    "Reverse charge: no tax charged; the recipient accounts for the tax (buyer tax id {tax_id})."
)


@dataclass(frozen=True)
class LineAmounts:
    net: Decimal
    tax: Decimal
    total: Decimal


def line_amounts(
    quantity: Decimal,
    unit_price: Decimal,
    discount: Decimal,
    rate: Decimal,
    *,
    inclusive: bool,
    currency: str,
) -> LineAmounts:
    """Net, tax and total of one line.

    ``rate`` is a percentage (19 means 19 %). Exclusive pricing adds tax on top
    of ``quantity * unit_price - discount``; inclusive pricing treats that
    amount as the total and extracts the tax from it.
    """
    amount = quantize(quantity * unit_price - discount, currency)
    if inclusive:
        net = quantize(amount * HUNDRED / (HUNDRED + rate), currency)
        return LineAmounts(net=net, tax=amount - net, total=amount)
    tax = quantize(amount * rate / HUNDRED, currency)
    return LineAmounts(net=amount, tax=tax, total=amount + tax)


def split_credit(
    amount: Decimal, line_tax: Decimal, line_total: Decimal, currency: str
) -> tuple[Decimal, Decimal]:
    """(net, tax) of crediting ``amount`` of a line's total, tax in proportion."""
    if line_total == 0:
        return amount, Decimal(0)
    tax = quantize(amount * line_tax / line_total, currency)
    return amount - tax, tax
