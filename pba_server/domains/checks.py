"""Checks and conversions of the domain operations: values in, values out,
no session. A TLD's prices checked, the plan periods that sell them, and
registry contacts checked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict
from decimal import Decimal
from typing import Literal

from pba_server.catalog.types import PlanPeriod
from pba_server.core.errors import ValidationError
from pba_server.core.money import money
from pba_server.domains.types import DomainContact
from pba_server.domains.types import TldPrice as TldPriceValue
from pba_server.sdk.registrar import CONTACT_ROLES, Contact


def check_prices(prices: Sequence[TldPriceValue], currency: str) -> list[TldPriceValue]:
    if not prices:
        raise ValidationError("prices", "give the prices of at least one period")
    seen: set[int] = set()
    out = []
    for i, p in enumerate(prices):
        f = f"prices[{i}]"
        if not 1 <= p.years <= 10:
            raise ValidationError(f"{f}.years", "must be 1 to 10")
        if p.years in seen:
            raise ValidationError(f"{f}.years", f"{p.years} year(s) given twice")
        seen.add(p.years)
        amounts: dict[str, Decimal | None] = {}
        for name in ("register", "renew", "transfer"):
            value = getattr(p, name)
            if value is None:
                if name != "transfer":
                    raise ValidationError(f"{f}.{name}", "is required")
                amounts[name] = None
                continue
            amount = money(value, currency, f"{f}.{name}")
            if amount < 0:
                raise ValidationError(f"{f}.{name}", "must not be negative")
            amounts[name] = amount
        reg, renew = amounts["register"], amounts["renew"]
        assert reg is not None and renew is not None
        out.append(TldPriceValue(p.years, reg, renew, amounts["transfer"]))
    return sorted(out, key=lambda p: p.years)


def plan_periods(
    prices: Sequence[TldPriceValue], first: Literal["register", "transfer"]
) -> list[PlanPeriod]:
    """Plan periods whose first period costs the register (transfer) price and
    each renewal the renew price: the difference is a setup fee when the first
    period costs more, a renewal fee when it costs less."""
    out = []
    for p in prices:
        first_price = p.register if first == "register" else p.transfer
        if first_price is None:
            continue
        if first_price >= p.renew:
            setup, recurring, renewal = first_price - p.renew, p.renew, Decimal(0)
        else:
            setup, recurring, renewal = Decimal(0), first_price, p.renew - first_price
        out.append(PlanPeriod(p.years, "year", setup, recurring, renewal, is_default=False))
    if out:
        out[0].is_default = True
    return out


def check_contacts(contacts: Sequence[DomainContact]) -> dict[str, Contact]:
    out: dict[str, Contact] = {}
    if not contacts:
        raise ValidationError("contacts", "give at least one contact")
    for i, c in enumerate(contacts):
        f = f"contacts[{i}]"
        if c.role not in CONTACT_ROLES:
            raise ValidationError(f"{f}.role", f"must be one of: {', '.join(CONTACT_ROLES)}")
        if c.role in out:
            raise ValidationError(f"{f}.role", f"{c.role} given twice")
        if not c.name or not c.name.strip() or len(c.name) > 255:
            raise ValidationError(f"{f}.name", "must be 1 to 255 characters")
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", c.email or ""):
            raise ValidationError(f"{f}.email", "must be an e-mail address")
        if c.country and not re.fullmatch(r"[A-Za-z]{2}", c.country):
            raise ValidationError(f"{f}.country", "must be an ISO 3166 two-letter code")
        values = {k: v for k, v in asdict(c).items() if k != "role"}
        for k, v in values.items():
            if v is not None and len(str(v)) > 255:
                raise ValidationError(f"{f}.{k}", "must be at most 255 characters")
        values["country"] = (c.country or "").upper()
        out[c.role] = Contact.from_dict({k: (v or "").strip() for k, v in values.items()})
    return out
