"""Stripe: card payments through Stripe's PaymentIntents API, over plain HTTPS
(the ``requests`` library; no Stripe SDK needed).

The stored payment method token is a Stripe PaymentMethod saved for
off-session use: ``pm_...``, or ``cus_...:pm_...`` when it is attached to a
Customer (Stripe requires the customer for an attached PaymentMethod). Card
data never reaches pba-server: your checkout page collects it with Stripe.js
and gives you the PaymentMethod (and Customer) id.

- charge: ``POST /v1/payment_intents`` with ``confirm=true`` and
  ``off_session=true``, our key as the ``Idempotency-Key`` header and as
  ``metadata[pba_key]``. A repeat with the same key is Stripe's idempotent
  replay of the first answer: never a second charge.
- declines (HTTP 402, ``card_error``) raise ``CardDeclined`` with Stripe's
  ``decline_code`` (else its error ``code``); a card that needs the customer
  (3-D Secure: ``authentication_required``, or a PaymentIntent left
  ``requires_action``) raises ``AuthenticationRequired``; no answer within
  ``timeout`` seconds raises ``GatewayTimeout``; HTTP 5xx, 429 and network
  failures raise ``GatewayError`` (the server keeps the charge pending and
  looks it up later).
- lookup: ``GET /v1/payment_intents/search`` by ``metadata['pba_key']``.
  Stripe's search index lags writes by up to about a minute; pba-server's
  reconciliation asks after two minutes. A PaymentIntent still
  ``processing`` raises ``GatewayError`` (ask again later).
- refund: ``POST /v1/refunds`` on the PaymentIntent, idempotent by key;
  Stripe's ``amount_too_large`` / ``charge_already_refunded`` raise
  ``RefundRejected``.

Settings: ``api_key`` (secret: ``sk_live_``, ``sk_test_`` or a restricted
``rk_`` key), ``api_base`` (default ``https://api.stripe.com``; the tests
point it at a local fake), ``timeout`` (seconds, default 30).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import requests

from pba_server.sdk import (
    SDK_VERSION,
    AuthenticationRequired,
    CardDeclined,
    ChargeResult,
    ConfigurationError,
    GatewayError,
    GatewayTimeout,
    LookupResult,
    PaymentGateway,
    PluginInfo,
    RefundRejected,
    RefundResult,
    SettingField,
)

STRIPE_VERSION = "2024-06-20"
# Stripe's zero-decimal currencies; amounts of all others go in hundredths,
# except the three-decimal ones (thousandths).
ZERO_DECIMAL = frozenset(
    {
        *("BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA"),
        *("PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"),
    }
)
THREE_DECIMAL = frozenset(["BHD", "JOD", "KWD", "OMR", "TND"])


def minor_units(currency: str) -> int:
    c = currency.upper()
    return 0 if c in ZERO_DECIMAL else 3 if c in THREE_DECIMAL else 2


def to_minor(amount: Decimal, currency: str) -> int:
    scaled = amount.scaleb(minor_units(currency))
    if scaled != scaled.to_integral_value():
        raise ConfigurationError(f"{amount} has more decimals than {currency} allows")
    return int(scaled)


def from_minor(value: int, currency: str) -> Decimal:
    return Decimal(value).scaleb(-minor_units(currency))


def split_token(token: str) -> tuple[str | None, str]:
    """``cus_x:pm_y`` -> ("cus_x", "pm_y"); ``pm_y`` -> (None, "pm_y")."""
    customer, sep, method = token.partition(":")
    return (customer, method) if sep else (None, customer)


class StripeGateway(PaymentGateway):
    info = PluginInfo(
        name="stripe",
        version="1.0.0",
        sdk_version=SDK_VERSION,
        description="Stripe PaymentIntents (off-session charges of saved PaymentMethods)",
        settings=(
            SettingField("api_key", secret=True, description="sk_live_..., sk_test_... or rk_..."),
            SettingField(
                "api_base",
                required=False,
                default="https://api.stripe.com",
                description="Stripe's API address",
            ),
            SettingField(
                "timeout", type="int", required=False, default="30", description="seconds"
            ),
        ),
        capabilities=frozenset(
            {"charge", "refund", "partial_refund", "recurring_tokens", "3ds", "lookup"}
        ),
    )

    def __init__(self, settings: dict[str, str]) -> None:
        super().__init__(settings)
        key = settings.get("api_key") or ""
        if not key.startswith(("sk_live_", "sk_test_", "rk_live_", "rk_test_")):
            raise ConfigurationError("api_key must be a Stripe secret or restricted key")
        base = (settings.get("api_base") or "https://api.stripe.com").rstrip("/")
        if not base.startswith(("https://", "http://")):
            raise ConfigurationError("api_base must be an http(s) URL")
        try:
            self.timeout = float(settings.get("timeout") or 30)
        except ValueError:
            raise ConfigurationError("timeout must be a number of seconds") from None
        if not 0 < self.timeout <= 300:
            raise ConfigurationError("timeout must be between 0 and 300 seconds")
        self.base = base
        self._key = key

    # ------------------------------------------------------------ HTTP

    def _request(
        self,
        method: str,
        path: str,
        *,
        data: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        headers = {
            "Authorization": f"Bearer {self._key}",
            "Stripe-Version": STRIPE_VERSION,
            "User-Agent": f"pba-server-stripe/{self.info.version}",
        }
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        try:
            resp = requests.request(
                method,
                self.base + path,
                data=data,
                params=params,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.Timeout:
            raise GatewayTimeout(f"Stripe did not answer within {self.timeout:g} s") from None
        except requests.RequestException as exc:
            raise GatewayError(f"cannot reach Stripe: {type(exc).__name__}") from None
        try:
            body = resp.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if resp.status_code >= 500 or resp.status_code == 429:
            raise GatewayError(f"Stripe answered HTTP {resp.status_code}")
        if resp.status_code in (401, 403):
            raise ConfigurationError(f"Stripe refused the API key (HTTP {resp.status_code})")
        return resp.status_code, body

    @staticmethod
    def _error(body: dict[str, Any]) -> dict[str, Any]:
        err = body.get("error")
        return err if isinstance(err, dict) else {}

    # ------------------------------------------------------------ charges

    def _captured(self, pi: dict[str, Any], currency: str) -> ChargeResult:
        received = pi.get("amount_received") or pi.get("amount") or 0
        cur = str(pi.get("currency") or currency).upper()
        return ChargeResult(str(pi["id"]), from_minor(int(received), cur), cur)

    def _declined(self, err: dict[str, Any]) -> CardDeclined:
        code = str(err.get("code") or "")
        decline = str(err.get("decline_code") or "")
        message = str(err.get("message") or "")
        if code == "authentication_required" or decline == "authentication_required":
            return AuthenticationRequired(message or "3-D Secure authentication required")
        return CardDeclined(decline or code or "card_declined", message)

    def charge(
        self, *, key: str, amount: Decimal, currency: str, token: str, description: str
    ) -> ChargeResult:
        customer, method = split_token(token)
        data = {
            "amount": str(to_minor(amount, currency)),
            "currency": currency.lower(),
            "payment_method": method,
            "confirm": "true",
            "off_session": "true",
            "description": description[:1000],
            "metadata[pba_key]": key,
        }
        if customer:
            data["customer"] = customer
        status, body = self._request("POST", "/v1/payment_intents", data=data, idempotency_key=key)
        if status == 200:
            state = body.get("status")
            if state == "succeeded":
                return self._captured(body, currency)
            if state == "requires_action":
                raise AuthenticationRequired()
            if state == "processing":
                raise GatewayError("Stripe is still processing the payment")
            raise CardDeclined(str(state or "unexpected_status"), f"PaymentIntent is {state}")
        err = self._error(body)
        if status == 402 or err.get("type") == "card_error":
            raise self._declined(err)
        if err.get("type") == "idempotency_error" or status == 409:
            raise GatewayError(f"Stripe refused the idempotency key: {err.get('message', '')}")
        # 400/404: Stripe refused the request (unknown PaymentMethod, say); no money moved
        raise CardDeclined(str(err.get("code") or f"http_{status}"), str(err.get("message") or ""))

    def lookup(self, *, key: str) -> LookupResult:
        if "'" in key or "\\" in key:
            raise GatewayError("key cannot be searched for")
        status, body = self._request(
            "GET", "/v1/payment_intents/search", params={"query": f"metadata['pba_key']:'{key}'"}
        )
        if status != 200:
            raise GatewayError(f"Stripe search answered HTTP {status}")
        found = [pi for pi in body.get("data") or [] if isinstance(pi, dict)]
        if not found:
            return LookupResult(status="not_found")
        pi = found[0]
        state = pi.get("status")
        if state == "succeeded":
            done = self._captured(pi, str(pi.get("currency") or ""))
            return LookupResult("captured", done.reference, done.amount, done.currency)
        if state == "processing":
            raise GatewayError("Stripe is still processing the payment")
        err = pi.get("last_payment_error") or {}
        if state == "requires_action":
            code = "authentication_required"
        else:
            code = str(err.get("decline_code") or err.get("code") or state or "declined")
        return LookupResult(status="declined", reference=str(pi.get("id")), decline_code=code)

    # ------------------------------------------------------------ refunds

    def refund(self, *, key: str, charge_reference: str, amount: Decimal) -> RefundResult:
        if not charge_reference:
            raise RefundRejected("no_such_charge", "the charge has no Stripe reference")
        # the amount in the PaymentIntent's currency: ask Stripe rather than guess
        data = {
            "payment_intent": charge_reference,
            "amount": str(self._minor_for(charge_reference, amount)),
            "metadata[pba_key]": key,
        }
        status, body = self._request("POST", "/v1/refunds", data=data, idempotency_key=key)
        if status == 200:
            if body.get("status") in ("failed", "canceled"):
                raise RefundRejected(str(body.get("failure_reason") or "refund_failed"))
            cur = str(body.get("currency") or "").upper()
            return RefundResult(str(body["id"]), from_minor(int(body.get("amount") or 0), cur))
        err = self._error(body)
        if err.get("type") == "idempotency_error":
            raise GatewayError(f"Stripe refused the idempotency key: {err.get('message', '')}")
        raise RefundRejected(str(err.get("code") or f"http_{status}"), str(err.get("message", "")))

    def _minor_for(self, payment_intent: str, amount: Decimal) -> int:
        status, body = self._request("GET", f"/v1/payment_intents/{payment_intent}")
        if status != 200:
            err = self._error(body)
            raise RefundRejected(str(err.get("code") or "no_such_charge"), str(err.get("message")))
        return to_minor(amount, str(body.get("currency") or "usd"))

    def validate_token(self, token: str) -> None:
        customer, method = split_token(token)
        if not method.startswith("pm_") or (
            customer is not None and not customer.startswith("cus_")
        ):
            raise CardDeclined("invalid_token", "expected pm_... or cus_...:pm_...")


PLUGIN = StripeGateway
