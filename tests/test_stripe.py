"""The Stripe plugin against a local fake Stripe (tests/fake_stripe.py): the
SDK conformance kit, Stripe specifics (idempotency header, 3-D Secure,
zero-decimal currencies, customers, errors), and charges and refunds
through the real endpoints on both protocols and both databases."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe

from pba_server.core.db import UnitOfWork
from pba_server.payments.reconcile import reconcile
from pba_server.sdk import (
    AuthenticationRequired,
    CardDeclined,
    ConfigurationError,
    GatewayError,
    PaymentGateway,
    loader,
)
from pba_server.sdk.testing import GatewayContract
from tests.billing_support import assert_books_sound, customer
from tests.catalog_support import Caller, D
from tests.fake_stripe import API_KEY, FakeStripe
from tests.test_payments_api import server_log

STRIPE: type[PaymentGateway] = loader.plugins()["stripe"].cls
_fake: FakeStripe | None = None


@pytest.fixture(scope="module", autouse=True)
def fake() -> Iterator[FakeStripe]:
    global _fake
    _fake = FakeStripe(slow=2.0)
    yield _fake
    _fake.close()
    _fake = None


def make(fake: FakeStripe, **kw: str) -> Any:
    return STRIPE({"api_key": API_KEY, "api_base": fake.url, "timeout": "1", **kw})


class TestStripeConformance(GatewayContract):
    plugin = STRIPE
    approve_token = "pm_card_visa"
    decline_tokens = {
        "pm_card_visa_chargeDeclinedInsufficientFunds": "insufficient_funds",
        "pm_card_visa_chargeDeclinedStolenCard": "stolen_card",
    }
    timeout_token = "pm_card_fake_slow"

    def make_gateway(self) -> PaymentGateway:
        assert _fake is not None
        return make(_fake)  # type: ignore[no-any-return]


def test_loaded_and_settings():
    p = loader.plugins()["stripe"]
    assert p.status == "ok", p.reason
    assert {f.name: f.secret for f in STRIPE.info.settings} == {
        "api_key": True,
        "api_base": False,
        "timeout": False,
    }
    with pytest.raises(ConfigurationError) as exc:
        STRIPE({"api_key": "pk_live_publishable"})
    assert "pk_live" not in str(exc.value)


def test_requests_as_stripe_documents_them(fake):
    gw = make(fake)
    key = "pba_idem_1"
    done = gw.charge(
        key=key,
        amount=Decimal("12.34"),
        currency="EUR",
        token="cus_ABC:pm_card_visa",
        description="invoice 7",
    )
    assert done.reference.startswith("pi_") and done.amount == Decimal("12.34")
    assert done.currency == "EUR"
    method, path, form, headers = fake.requests[-1]
    assert (method, path) == ("POST", "/v1/payment_intents")
    assert headers["idempotency-key"] == key and headers["authorization"] == f"Bearer {API_KEY}"
    # sent by Stripe's own library, at the API version it is pinned to, without telemetry
    assert headers["user-agent"] == f"Stripe/v1 PythonBindings/{stripe.VERSION}"
    assert headers["stripe-version"] == stripe.api_version
    assert headers["content-type"] == "application/x-www-form-urlencoded"
    assert "x-stripe-client-telemetry" not in headers
    assert "telemetry_id" not in headers["x-stripe-client-user-agent"]
    assert form == {
        "amount": "1234",
        "currency": "eur",
        "payment_method": "pm_card_visa",
        "customer": "cus_ABC",
        "confirm": "true",
        "off_session": "true",
        "description": "invoice 7",
        "metadata[pba_key]": key,
    }
    # zero-decimal currencies go in whole units
    yen = gw.charge(
        key="k-jpy", amount=Decimal("500"), currency="JPY", token="pm_card_visa", description=""
    )
    assert fake.requests[-1][2]["amount"] == "500" and yen.amount == Decimal("500")
    # three-decimal currencies in thousandths; more decimals than the currency has: refused
    dinar = gw.charge(
        key="k-kwd", amount=Decimal("1.234"), currency="KWD", token="pm_card_visa", description=""
    )
    assert fake.requests[-1][2]["amount"] == "1234" and dinar.amount == Decimal("1.234")
    assert gw.lookup(key="k-kwd").amount == Decimal("1.234")
    with pytest.raises(ConfigurationError):
        gw.charge(
            key="k-jpy2",
            amount=Decimal("1.5"),
            currency="JPY",
            token="pm_card_visa",
            description="",
        )
    # a refund is in the PaymentIntent's currency, keyed by our key
    r = gw.refund(key="rf-1", charge_reference=done.reference, amount=Decimal("2.50"))
    assert r.reference.startswith("re_") and r.amount == Decimal("2.50")
    assert fake.requests[-1][2]["amount"] == "250"
    assert fake.requests[-1][3]["idempotency-key"] == "rf-1"


def test_3ds_5xx_and_bad_key(fake):
    gw = make(fake)
    with pytest.raises(AuthenticationRequired) as exc:
        gw.charge(
            key="k3",
            amount=Decimal("1"),
            currency="USD",
            token="pm_card_authenticationRequired",
            description="",
        )
    assert exc.value.code == "authentication_required"
    assert gw.lookup(key="k3").decline_code == "authentication_required"
    with pytest.raises(GatewayError):
        gw.charge(
            key="k5", amount=Decimal("1"), currency="USD", token="pm_card_fake_500", description=""
        )
    assert gw.lookup(key="k5").status == "not_found"  # nothing was created: reconciled as declined
    wrong = STRIPE({"api_key": "sk_test_wrong", "api_base": fake.url})
    with pytest.raises(ConfigurationError) as cfg:
        wrong.charge(
            key="k6", amount=Decimal("1"), currency="USD", token="pm_card_visa", description=""
        )
    assert "sk_test_wrong" not in str(cfg.value)
    # nobody listening: outcome unknown, never an exception from requests
    closed = STRIPE({"api_key": API_KEY, "api_base": "http://127.0.0.1:9", "timeout": "1"})
    with pytest.raises(GatewayError):
        closed.charge(
            key="k7", amount=Decimal("1"), currency="USD", token="pm_card_visa", description=""
        )
    with pytest.raises(CardDeclined):
        gw.validate_token("tok_visa")
    gw.validate_token("cus_1:pm_1")


@pytest.mark.parametrize("protocol", ["soap", "xmlrpc"])
def test_charge_and_refund_through_the_api(api, env, fake, protocol, caplog):
    caplog.set_level(logging.DEBUG)
    call = Caller(api, protocol)
    inst = call(
        "PluginConfigure",
        plugin="stripe",
        name="stripe",
        settings=[
            {"name": "api_key", "value": API_KEY},
            {"name": "api_base", "value": fake.url},
            {"name": "timeout", "value": "1"},
        ],
    )
    assert API_KEY not in repr(inst) and inst["secret_settings_set"] == ["api_key"]
    acc = customer(env, "Stripe customer")
    inv = call(
        "InvoiceCreate",
        account_id=acc,
        lines=[{"description": "Hosting", "unit_price": Decimal("40.00")}],
        issue=True,
        autopay=False,
        idempotency_key=f"inv-{protocol}",
    )
    methods = {}
    for token in (
        "cus_9:pm_card_visa",
        "pm_card_visa_chargeDeclinedStolenCard",
        "pm_card_fake_slow",
    ):
        methods[token] = call(
            "PaymentMethodAdd",
            account_id=acc,
            instance_id=inst["id"],
            token=token,
            brand="visa",
            last4="4242",
            expiry_month=12,
            expiry_year=2030,
            holder="S. Customer",
            idempotency_key=f"pm-{token}-{protocol}",
        )["id"]
    code, msg = call.fault(
        "PaymentCharge",
        payment_method_id=methods["pm_card_visa_chargeDeclinedStolenCard"],
        invoice_id=inv["id"],
        idempotency_key="stolen",
    )
    assert code == "Client.PaymentDeclined" and msg.startswith("stolen_card")
    charge = call(
        "PaymentCharge",
        payment_method_id=methods["cus_9:pm_card_visa"],
        invoice_id=inv["id"],
        idempotency_key="pay",
    )
    assert charge["status"] == "captured" and charge["gateway_reference"].startswith("pi_")
    assert call("InvoiceGet", invoice_id=inv["id"])["status"] == "paid"
    refund = call(
        "PaymentRefund",
        charge_id=charge["id"],
        amount=Decimal("15.00"),
        reason="goodwill",
        idempotency_key="r1",
    )
    assert refund["status"] == "refunded" and refund["gateway_reference"].startswith("re_")
    code, _ = call.fault(
        "PaymentRefund",
        charge_id=charge["id"],
        amount=Decimal("30.00"),
        reason="too much",
        idempotency_key="r2",
    )
    assert code == "Client.Validation"  # above what is left: refused before Stripe is asked
    assert D(call("InvoiceGet", invoice_id=inv["id"])["outstanding"]) == D("15.00")
    # the answer lost in a timeout: pending, then reconciled by key through search
    slow = call(
        "PaymentCharge",
        payment_method_id=methods["pm_card_fake_slow"],
        amount=Decimal("3.00"),
        idempotency_key="slow",
    )
    assert slow["status"] == "pending"
    with UnitOfWork(env.app.engine) as uow:
        assert reconcile(uow, env.app.runtime, older_than=timedelta(0)) == "1 captured"
        uow.commit()
    assert call("PaymentChargeGet", charge_id=slow["id"])["status"] == "captured"
    assert API_KEY not in server_log(caplog)  # nor in any log line of ours
    assert_books_sound(env)


def test_library_logs_never_show_the_key(fake, caplog):
    """Even with the library's own ``stripe`` logger at DEBUG (it logs request
    parameters and response bodies), the API key appears in no log line; by
    default the plugin keeps that logger at WARNING."""
    log = logging.getLogger("stripe")
    make(fake)
    assert log.level == logging.WARNING
    caplog.set_level(logging.DEBUG, logger="stripe")
    gw = make(fake)
    done = gw.charge(
        key="log-1", amount=Decimal("5"), currency="USD", token="pm_card_visa", description=""
    )
    gw.refund(key="log-r1", charge_reference=done.reference, amount=Decimal("1"))
    gw.lookup(key="log-1")
    with pytest.raises(CardDeclined):
        gw.charge(
            key="log-2",
            amount=Decimal("5"),
            currency="USD",
            token="pm_card_visa_chargeDeclinedStolenCard",
            description="",
        )
    with pytest.raises(ConfigurationError):
        STRIPE({"api_key": "sk_test_wrong", "api_base": fake.url}).lookup(key="log-1")
    lines = [r.getMessage() for r in caplog.records if r.name == "stripe"]
    assert any("/v1/payment_intents" in line for line in lines)  # it did log, at DEBUG
    text = "\n".join(lines)
    assert API_KEY not in text and "sk_test_wrong" not in text


@pytest.mark.parametrize(
    ("status", "body", "raised"),
    [
        (429, {"type": "invalid_request_error", "code": "rate_limit"}, GatewayError),
        (500, {"type": "api_error"}, GatewayError),
        (503, None, GatewayError),  # not Stripe's JSON (a proxy's page): outcome unknown
        (403, {"type": "invalid_request_error"}, ConfigurationError),  # restricted key
        (409, {"type": "invalid_request_error", "code": "lock_timeout"}, GatewayError),
        (400, {"type": "idempotency_error"}, GatewayError),
        (404, {"type": "invalid_request_error", "code": "resource_missing"}, CardDeclined),
    ],
)
def test_library_errors_map_to_the_sdk(status, body, raised):
    """Each of Stripe's documented error answers (as the library classifies
    them) becomes the SDK exception the server acts on."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            raw = (
                b"<html>busy</html>"
                if body is None
                else json.dumps({"error": {"message": "no", **body}}).encode()
            )
            self.send_response(status)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        gw = STRIPE(
            {"api_key": API_KEY, "api_base": f"http://127.0.0.1:{server.server_address[1]}"}
        )
        with pytest.raises(raised) as exc:
            gw.charge(key="e1", amount=Decimal("1"), currency="USD", token="pm_x", description="")
        assert type(exc.value) is raised and API_KEY not in str(exc.value)
    finally:
        server.shutdown()
        server.server_close()
