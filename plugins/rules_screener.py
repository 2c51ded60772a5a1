"""``rules_screener``: a fraud screener of simple rules.

Each rule that fires adds points and a reason; the order is ``suspect`` (a
person approves it) when the score reaches ``suspect_score`` and ``fraud``
(rejected) when it reaches ``fraud_score`` (0: never).

- amount over ``max_amount`` (40 points);
- first order of an account created less than ``new_account_hours`` ago (30);
- the card's country differs from the account's (40). Stored payment methods
  carry no country today, so this rule fires only when a country is known;
- more than ``max_orders_per_hour`` orders in the last hour (50).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from pba_server.sdk import ConfigurationError, PluginInfo, SettingField
from pba_server.sdk.fraud import FraudScreener, OrderFacts, Screening


class RulesScreener(FraudScreener):
    info = PluginInfo(
        name="rules_screener",
        version="1.0",
        sdk_version="1.0",
        kind="fraud_screener",
        description="Rules: amount threshold, new account, country mismatch, order velocity",
        settings=(
            SettingField("max_amount", "decimal", default="1000"),
            SettingField("new_account_hours", "int", default="24"),
            SettingField("max_orders_per_hour", "int", default="5"),
            SettingField("suspect_score", "int", default="30"),
            SettingField("fraud_score", "int", default="0"),
        ),
    )

    def __init__(self, settings: dict[str, str]) -> None:
        super().__init__(settings)
        try:
            self.max_amount = Decimal(settings.get("max_amount") or "1000")
            self.new_hours = int(settings.get("new_account_hours") or "24")
            self.max_per_hour = int(settings.get("max_orders_per_hour") or "5")
            self.suspect_at = int(settings.get("suspect_score") or "30")
            self.fraud_at = int(settings.get("fraud_score") or "0")
        except (ValueError, ArithmeticError) as exc:
            raise ConfigurationError(f"bad setting: {exc}") from None

    def screen(self, facts: OrderFacts) -> Screening:
        score, reasons = 0, []
        if facts.total > self.max_amount:
            score += 40
            reasons.append(f"amount {facts.total} {facts.currency} over {self.max_amount}")
        if facts.previous_orders == 0 and facts.placed_at - facts.account_created_at < timedelta(
            hours=self.new_hours
        ):
            score += 30
            reasons.append("first order of a new account")
        if (
            facts.card_country
            and facts.account_country
            and facts.card_country.upper() != facts.account_country.upper()
        ):
            score += 40
            reasons.append(f"card country {facts.card_country} is not {facts.account_country}")
        if facts.orders_last_hour >= self.max_per_hour:
            score += 50
            reasons.append(f"{facts.orders_last_hour} orders in the last hour")
        score = min(score, 100)
        if self.fraud_at and score >= self.fraud_at:
            return Screening("fraud", score, tuple(reasons))
        if score >= self.suspect_at:
            return Screening("suspect", score, tuple(reasons))
        return Screening("pass", score, tuple(reasons))


PLUGIN = RulesScreener
