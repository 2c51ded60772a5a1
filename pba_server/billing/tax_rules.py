"""Tax rules: each seller's rate per buyer country (and region), the
operations that set, list and remove them, and the rule a buyer gets."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from pba_server.accounts.models import Account, Contact
from pba_server.accounts.records import get_account
from pba_server.billing.common import BILLING, READERS, SELLERS
from pba_server.billing.models import TaxRule
from pba_server.billing.rules import plain
from pba_server.billing.types import TaxRuleInfo, TaxRulePage
from pba_server.core import audit, paging
from pba_server.core.context import CallContext
from pba_server.core.errors import NotFound, ValidationError
from pba_server.core.money import to_decimal
from pba_server.core.operations import operation


def _buyer_region(ctx: CallContext, account_id: int) -> str:
    state = ctx.session.scalar(
        select(Contact.state).where(Contact.account_id == account_id).order_by(Contact.id).limit(1)
    )
    return (state or "").strip()


def tax_rule_for(ctx: CallContext, issuer_id: int, buyer: Account) -> TaxRule | None:
    if not buyer.country:
        return None
    region = _buyer_region(ctx, buyer.id)
    rules = ctx.session.scalars(
        select(TaxRule).where(
            TaxRule.seller_id == issuer_id,
            TaxRule.buyer_country == buyer.country,
            TaxRule.buyer_region.in_(("", region)),
            TaxRule.active.is_(True),
        )
    ).all()
    # a rule for the buyer's region beats the one for the whole country
    return max(rules, key=lambda r: r.buyer_region != "", default=None)


def _tax_info(r: TaxRule) -> TaxRuleInfo:
    return TaxRuleInfo(
        id=r.id,
        seller_id=r.seller_id,
        buyer_country=r.buyer_country,
        name=r.name,
        rate=plain(r.rate),
        reverse_charge=r.reverse_charge,
        buyer_region=r.buyer_region or None,
    )


@operation("TaxRuleSet", roles=BILLING, mutating=True)
def tax_rule_set(
    ctx: CallContext,
    *,
    buyer_country: str,
    name: str,
    rate: Decimal,
    reverse_charge: bool = False,
    buyer_region: str | None = None,
    seller_id: int | None = None,
) -> TaxRuleInfo:
    """Create or replace the seller's tax rule for buyers in a country (and
    optionally one region, which then wins over the country's rule).

    ``rate`` is a percentage. With ``reverse_charge`` a buyer with a tax id is
    charged no tax and the invoice carries reverse-charge wording. Whether a
    price includes the tax is a property of the price (the line), not the rule.
    Invoices already issued keep the rate they were issued with.
    """
    seller = get_account(ctx, seller_id if seller_id is not None else ctx.principal.account_id)
    if seller.type not in SELLERS:
        raise ValidationError("seller_id", "only the provider and resellers sell")
    country = buyer_country.strip().upper()
    if len(country) != 2 or not country.isalpha():
        raise ValidationError("buyer_country", "must be an ISO 3166-1 alpha-2 code")
    region = (buyer_region or "").strip()
    if len(region) > 128:
        raise ValidationError("buyer_region", "must be at most 128 characters")
    nm = name.strip()
    if not 1 <= len(nm) <= 64:
        raise ValidationError("name", "must be 1 to 64 characters")
    r = to_decimal(rate, "rate")
    if not 0 <= r <= 100 or r != r.quantize(Decimal("0.0001")):
        raise ValidationError("rate", "must be a percentage from 0 to 100 with at most 4 decimals")
    rule = ctx.session.scalar(
        select(TaxRule)
        .where(
            TaxRule.seller_id == seller.id,
            TaxRule.buyer_country == country,
            TaxRule.buyer_region == region,
        )
        .with_for_update()
    )
    before = _tax_info(rule).__dict__ if rule and rule.active else {}
    if rule is None:
        rule = TaxRule(seller_id=seller.id, buyer_country=country, buyer_region=region)
        ctx.session.add(rule)
    rule.name, rule.rate, rule.reverse_charge, rule.active = nm, r, reverse_charge, True
    ctx.session.flush()
    info = _tax_info(rule)
    audit.record(ctx, "tax_rule", rule.id, seller.path, audit.diff(before, info.__dict__))
    return info


@operation("TaxRuleList", roles=READERS)
def tax_rule_list(
    ctx: CallContext,
    *,
    seller_id: int | None = None,
    offset: int = 0,
    limit: int = paging.DEFAULT_LIMIT,
) -> TaxRulePage:
    """The seller's active tax rules (default: the caller's account's), by country and region."""
    seller = get_account(ctx, seller_id if seller_id is not None else ctx.principal.account_id)
    q = (
        select(TaxRule)
        .where(TaxRule.seller_id == seller.id, TaxRule.active.is_(True))
        .order_by(TaxRule.buyer_country, TaxRule.buyer_region)
    )
    rows, total = paging.scalars(ctx.session, q, offset, limit)
    return TaxRulePage([_tax_info(r) for r in rows], total, offset, limit)


@operation("TaxRuleRemove", roles=BILLING, mutating=True)
def tax_rule_remove(ctx: CallContext, *, tax_rule_id: int) -> bool:
    """Stop applying a tax rule to new invoice lines (issued invoices keep it)."""
    rule = ctx.session.get(TaxRule, tax_rule_id, with_for_update=True)
    seller = ctx.session.get(Account, rule.seller_id) if rule is not None else None
    # another seller's rule is "not found" like a missing one: never name its owner
    if rule is None or not rule.active or seller is None or not ctx.principal.sees(seller.path):
        raise NotFound(f"tax rule {tax_rule_id} not found")
    rule.active = False
    audit.record(ctx, "tax_rule", rule.id, seller.path, {"removed": True})
    return True
