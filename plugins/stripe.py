"""Stripe: card payments through Stripe's PaymentIntents API, with Stripe's
official Python library (``stripe``, its ``StripeClient``; pinned in
setup.cfg).

The stored payment method token is a Stripe PaymentMethod saved for
off-session use: ``pm_...``, or ``cus_...:pm_...`` when it is attached to a
Customer (Stripe requires the customer for an attached PaymentMethod). Card
data never reaches pba-server: your checkout page collects it with Stripe.js
and gives you the PaymentMethod (and Customer) id.

- charge: ``client.v1.payment_intents.create`` (``POST /v1/payment_intents``)
  with ``confirm=true`` and ``off_session=true``, our key as the library's
  ``idempotency_key`` request option (the ``Idempotency-Key`` header) and as
  ``metadata[pba_key]``. A repeat with the same key is Stripe's idempotent
  replay of the first answer: never a second charge. The library's own
  network retries are off (``max_network_retries=0``): pba-server retries
  through its pending/lookup path instead.
- declines (HTTP 402, the library's ``CardError``) raise ``CardDeclined``
  with Stripe's ``decline_code`` (else its error ``code``); a card that needs
  the customer (3-D Secure: ``authentication_required``, or a PaymentIntent
  left ``requires_action``) raises ``AuthenticationRequired``; no answer
  within ``timeout`` seconds raises ``GatewayTimeout``; HTTP 5xx, 429 and
  network failures (``APIError``, ``RateLimitError``,
  ``APIConnectionError``) raise ``GatewayError`` (the server keeps the charge
  pending and looks it up later); a refused key (``AuthenticationError``,
  ``PermissionError``) raises ``ConfigurationError``.
- lookup: ``client.v1.payment_intents.search`` by ``metadata['pba_key']``.
  Stripe's search index lags writes (its docs: searchable "in less than a
  minute" normally, longer during an outage), so a charge made seconds ago
  may not be found yet: ``lookup_settles_seconds`` is 120, and pba-server
  takes a ``not_found`` as final (no money moved) only two minutes after the
  charge call was sent; before that the charge stays pending and is asked
  about again. A PaymentIntent still
  ``processing`` raises ``GatewayError`` (ask again later).

  Why search and not a consistent read: a PaymentIntent is retrieved by its
  ``pi_...`` id, which we learn only from the answer a crash lost; ``list``
  reads are consistent but cannot filter on metadata; and replaying the
  create with the same ``Idempotency-Key`` (Stripe replays the first answer
  for 24 h) is not a lookup: if the first request never reached Stripe the
  replay makes the charge then, from a reconciliation job, it must repeat the
  original parameters exactly (``lookup`` is given only the key), and while
  the first request is still in flight Stripe answers 409.
- refund: ``client.v1.refunds.create`` on the PaymentIntent, idempotent by
  key; Stripe's ``amount_too_large`` / ``charge_already_refunded`` raise
  ``RefundRejected``.

Requests use the library's pinned API version (``stripe.api_version``). The
library's telemetry is turned off (see ``configure_library``), and its
``stripe`` logger (parameters and response bodies at DEBUG, never the API
key) is set to WARNING unless your logging configuration gave it a level.
The library's HTTP session is the SDK's (``self.net.http_session()``): every
connection, redirects included, is under the server's outgoing-address
policy, and a connection failure is one generic message (detail in the log).

Settings: ``api_key`` (secret: ``sk_live_``, ``sk_test_`` or a restricted
``rk_`` key), ``api_base`` (a ``url`` setting, the operator's: default
``https://api.stripe.com``; the tests point it at a local fake), ``timeout``
(seconds, default 30). A reseller configures its own instance with its own
key; its ``api_base`` is the default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import stripe

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
from pba_server.sdk.net import ConnectionFailed, Timeout

T = TypeVar("T")
# Stripe's zero-decimal currencies; amounts of all others go in hundredths,
# except the three-decimal ones (thousandths).
ZERO_DECIMAL = frozenset(
    {
        *("BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA"),
        *("PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"),
    }
)
THREE_DECIMAL = frozenset(["BHD", "JOD", "KWD", "OMR", "TND"])


def configure_library() -> None:
    """Process-wide settings of the library, for a headless server.

    - Telemetry off: with it on, the library writes an id file under the
      service user's home (``~/.config/stripe/telemetry_id``) and sends it,
      with the host's platform string and request timings, to Stripe.
    - The library logs every request (parameters and response bodies at
      DEBUG, a line per call at INFO; never the API key) on the ``stripe``
      logger: keep it at WARNING unless the operator's logging set it.
    """
    stripe.enable_telemetry = False
    log = logging.getLogger("stripe")
    if log.level == logging.NOTSET:
        log.setLevel(logging.WARNING)


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
    # lookup searches, and Stripe's search index lags writes by up to about a
    # minute: a not_found is "not yet known" until two minutes after the call
    lookup_settles_seconds = 120

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
                kind="url",
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
        configure_library()
        self._client = stripe.StripeClient(
            key,
            base_addresses={"api": base},
            max_network_retries=0,
            # the SDK's session: every connection under the server's address policy
            http_client=stripe.RequestsClient(
                timeout=self.timeout, session=self.net.http_session()
            ),
        )

    # ------------------------------------------------------------ calls

    def _call(self, request: Callable[[], T]) -> T:
        """Run one library call; the errors that mean the same for every call
        become the SDK's. ``CardError`` and ``InvalidRequestError`` (Stripe
        answered and refused: no money moved) are left to the caller."""
        try:
            return request()
        except stripe.APIConnectionError as exc:
            if isinstance(exc.__cause__, Timeout):
                raise GatewayTimeout(f"Stripe did not answer within {self.timeout:g} s") from None
            if isinstance(exc.__cause__, ConnectionFailed):  # the detail is in the log
                raise GatewayError(f"cannot reach Stripe: {exc.__cause__}") from None
            raise GatewayError("cannot reach Stripe: connection error") from None
        except (stripe.AuthenticationError, stripe.PermissionError) as exc:
            raise ConfigurationError(
                f"Stripe refused the API key (HTTP {exc.http_status})"
            ) from None
        except stripe.IdempotencyError as exc:
            raise GatewayError(
                f"Stripe refused the idempotency key: {exc.user_message or ''}"
            ) from None
        except (stripe.RateLimitError, stripe.APIError) as exc:
            raise GatewayError(f"Stripe answered HTTP {exc.http_status}") from None
        except stripe.StripeError as exc:
            if isinstance(exc, (stripe.CardError, stripe.InvalidRequestError)):
                raise
            raise GatewayError(f"Stripe answered HTTP {exc.http_status}") from None

    @staticmethod
    def _error(exc: stripe.StripeError) -> dict[str, Any]:
        body = exc.json_body
        err = body.get("error") if isinstance(body, dict) else None
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
        params: dict[str, Any] = {
            "amount": to_minor(amount, currency),
            "currency": currency.lower(),
            "payment_method": method,
            "confirm": True,
            "off_session": True,
            "description": description[:1000],
            "metadata": {"pba_key": key},
        }
        if customer:
            params["customer"] = customer
        try:
            pi = self._call(
                lambda: self._client.v1.payment_intents.create(
                    params,  # type: ignore[arg-type]
                    {"idempotency_key": key},
                )
            ).to_dict()
        except stripe.CardError as exc:
            raise self._declined(self._error(exc)) from None
        except stripe.InvalidRequestError as exc:
            # 400/404: Stripe refused the request (unknown PaymentMethod, say); no money moved
            err = self._error(exc)
            raise CardDeclined(
                str(err.get("code") or f"http_{exc.http_status}"), str(err.get("message") or "")
            ) from None
        state = pi.get("status")
        if state == "succeeded":
            return self._captured(pi, currency)
        if state == "requires_action":
            raise AuthenticationRequired()
        if state == "processing":
            raise GatewayError("Stripe is still processing the payment")
        raise CardDeclined(str(state or "unexpected_status"), f"PaymentIntent is {state}")

    def lookup(self, *, key: str) -> LookupResult:
        if "'" in key or "\\" in key:
            raise GatewayError("key cannot be searched for")
        query = f"metadata['pba_key']:'{key}'"
        try:
            result = self._call(
                lambda: self._client.v1.payment_intents.search({"query": query})
            ).to_dict()
        except stripe.StripeError as exc:  # CardError/InvalidRequestError: a refused search
            raise GatewayError(f"Stripe search answered HTTP {exc.http_status}") from None
        found = [pi for pi in result.get("data") or [] if isinstance(pi, dict)]
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
        params: dict[str, Any] = {
            "payment_intent": charge_reference,
            "amount": self._minor_for(charge_reference, amount),
            "metadata": {"pba_key": key},
        }
        try:
            refund = self._call(
                lambda: self._client.v1.refunds.create(
                    params,  # type: ignore[arg-type]
                    {"idempotency_key": key},
                )
            ).to_dict()
        except stripe.StripeError as exc:  # CardError/InvalidRequestError: refused
            err = self._error(exc)
            raise RefundRejected(
                str(err.get("code") or f"http_{exc.http_status}"), str(err.get("message") or "")
            ) from None
        if refund.get("status") in ("failed", "canceled"):
            raise RefundRejected(str(refund.get("failure_reason") or "refund_failed"))
        cur = str(refund.get("currency") or "").upper()
        return RefundResult(str(refund["id"]), from_minor(int(refund.get("amount") or 0), cur))

    def _minor_for(self, payment_intent: str, amount: Decimal) -> int:
        try:
            pi = self._call(lambda: self._client.v1.payment_intents.retrieve(payment_intent))
        except stripe.StripeError as exc:  # 404: no such PaymentIntent
            err = self._error(exc)
            raise RefundRejected(
                str(err.get("code") or "no_such_charge"), str(err.get("message") or "")
            ) from None
        return to_minor(amount, str(pi.to_dict().get("currency") or "usd"))

    def validate_token(self, token: str) -> None:
        customer, method = split_token(token)
        if not method.startswith("pm_") or (
            customer is not None and not customer.startswith("cus_")
        ):
            raise CardDeclined("invalid_token", "expected pm_... or cus_...:pm_...")


PLUGIN = StripeGateway
