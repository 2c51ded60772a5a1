"""A local stand-in for Stripe's API (the parts plugins/stripe.py uses), on
loopback, answering as Stripe's API reference documents: form-encoded
requests, Bearer keys, idempotent replay by ``Idempotency-Key`` (a reused key
with other parameters is an ``idempotency_error``), PaymentIntents created
and confirmed off-session, declines as HTTP 402 ``card_error`` with a
``decline_code``, search by metadata, refunds never above what is left.

Test PaymentMethods (Stripe's own names where Stripe has one):

===========================================  ==================================
``pm_card_visa``                             succeeds
``pm_card_visa_chargeDeclinedInsufficientFunds``  402 ``insufficient_funds``
``pm_card_visa_chargeDeclinedStolenCard``    402 ``stolen_card``
``pm_card_authenticationRequired``           402 ``authentication_required``
``pm_card_fake_slow``                        succeeds, answers after ``slow`` s
``pm_card_fake_500``                         HTTP 500, nothing created
===========================================  ==================================

Anything else: 400 ``resource_missing``.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

API_KEY = "sk_test_fake_stripe_key_123"
DECLINES = {
    "pm_card_visa_chargeDeclinedInsufficientFunds": (
        "card_declined",
        "insufficient_funds",
        "Your card has insufficient funds.",
    ),
    "pm_card_visa_chargeDeclinedStolenCard": (
        "card_declined",
        "stolen_card",
        "Your card was declined.",
    ),
    "pm_card_authenticationRequired": (
        "authentication_required",
        "authentication_required",
        "Your card was declined. This transaction requires authentication.",
    ),
}
SUCCEEDS = {"pm_card_visa", "pm_card_fake_slow"}


class FakeStripe:
    def __init__(self, slow: float = 2.0) -> None:
        self.slow = slow
        self.lock = threading.Lock()
        self.intents: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.replays: dict[str, tuple[str, int, dict[str, Any]]] = {}  # key -> (params, code, body)
        self.requests: list[tuple[str, str, dict[str, str], dict[str, str]]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, code: int, body: dict[str, Any], replayed: bool = False) -> None:
                raw = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.send_header("Request-Id", f"req_{uuid.uuid4().hex[:14]}")
                if replayed:
                    self.send_header("Idempotent-Replayed", "true")
                self.end_headers()
                try:
                    self.wfile.write(raw)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (the timeout tests)

            def _handle(self, method: str) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(parse_qsl(self.rfile.read(length).decode())) if length else {}
                query = dict(parse_qsl(parts.query))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with fake.lock:
                    fake.requests.append((method, parts.path, form, headers))
                if headers.get("authorization") != f"Bearer {API_KEY}":
                    return self._answer(
                        401, fake.error("invalid_request_error", None, "Invalid API Key provided")
                    )
                key = headers.get("idempotency-key")
                if method == "POST" and key:
                    signature = json.dumps([parts.path, form], sort_keys=True)
                    with fake.lock:
                        seen = fake.replays.get(key)
                    if seen is not None:
                        if seen[0] != signature:
                            return self._answer(
                                400,
                                fake.error(
                                    "idempotency_error",
                                    None,
                                    "Keys for idempotent requests can only be used with the "
                                    "same parameters they were first used with.",
                                ),
                            )
                        return self._answer(seen[1], seen[2], replayed=True)
                code, body, delay = fake.route(method, parts.path, form, query)
                if method == "POST" and key and code < 500:
                    with fake.lock:
                        fake.replays[key] = (signature, code, body)
                if delay:
                    time.sleep(delay)
                self._answer(code, body)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def error(type: str, code: str | None, message: str, **more: Any) -> dict[str, Any]:
        err: dict[str, Any] = {"type": type, "message": message}
        if code:
            err["code"] = code
        err.update(more)
        return {"error": err}

    # ------------------------------------------------------------ the API

    def route(
        self, method: str, path: str, form: dict[str, str], query: dict[str, str]
    ) -> tuple[int, dict[str, Any], float]:
        if method == "POST" and path == "/v1/payment_intents":
            return self.create_intent(form)
        if method == "GET" and path == "/v1/payment_intents/search":
            return self.search(query.get("query", ""))
        m = re.fullmatch(r"/v1/payment_intents/(pi_\w+)", path)
        if method == "GET" and m:
            with self.lock:
                pi = self.intents.get(m.group(1))
            if pi is None:
                return 404, self.missing("payment_intent", m.group(1)), 0
            return 200, pi, 0
        if method == "POST" and path == "/v1/refunds":
            return self.refund(form)
        return (
            404,
            self.error(
                "invalid_request_error", None, f"Unrecognized request URL ({method}: {path})"
            ),
            0,
        )

    def missing(self, param: str, value: str) -> dict[str, Any]:
        return self.error(
            "invalid_request_error", "resource_missing", f"No such {param}: '{value}'", param=param
        )

    def create_intent(self, form: dict[str, str]) -> tuple[int, dict[str, Any], float]:
        for field in ("amount", "currency", "payment_method"):
            if not form.get(field):
                return (
                    400,
                    self.error(
                        "invalid_request_error",
                        "parameter_missing",
                        f"Missing required param: {field}.",
                        param=field,
                    ),
                    0,
                )
        pm = form["payment_method"]
        if pm == "pm_card_fake_500":
            return 500, self.error("api_error", None, "An unknown error occurred"), 0
        if pm not in SUCCEEDS and pm not in DECLINES:
            return 400, self.missing("payment_method", pm), 0
        if form.get("confirm") != "true" or form.get("off_session") != "true":
            return (
                400,
                self.error("invalid_request_error", None, "the fake only confirms off-session"),
                0,
            )
        pi_id = f"pi_{uuid.uuid4().hex[:24]}"
        metadata = {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")}
        pi: dict[str, Any] = {
            "id": pi_id,
            "object": "payment_intent",
            "amount": int(form["amount"]),
            "amount_received": 0,
            "currency": form["currency"],
            "customer": form.get("customer"),
            "description": form.get("description"),
            "payment_method": pm,
            "metadata": metadata,
            "status": "requires_payment_method",
            "last_payment_error": None,
            "latest_charge": None,
            "refunded": 0,
        }
        if pm in DECLINES:
            code, decline, message = DECLINES[pm]
            pi["last_payment_error"] = {
                "type": "card_error",
                "code": code,
                "decline_code": decline,
                "message": message,
            }
            with self.lock:
                self.intents[pi_id] = pi
            body = self.error("card_error", code, message, decline_code=decline, payment_intent=pi)
            return 402, body, 0
        pi.update(
            status="succeeded",
            amount_received=pi["amount"],
            latest_charge=f"ch_{uuid.uuid4().hex[:24]}",
        )
        with self.lock:
            self.intents[pi_id] = pi
        return 200, pi, self.slow if pm == "pm_card_fake_slow" else 0

    def search(self, query: str) -> tuple[int, dict[str, Any], float]:
        m = re.fullmatch(r"metadata\['(\w+)'\]:'([^']*)'", query)
        if m is None:
            return 400, self.error("invalid_request_error", None, "invalid search query"), 0
        field, value = m.groups()
        with self.lock:
            data = [pi for pi in self.intents.values() if pi["metadata"].get(field) == value]
        return (
            200,
            {
                "object": "search_result",
                "data": data,
                "has_more": False,
                "url": "/v1/payment_intents/search",
            },
            0,
        )

    def refund(self, form: dict[str, str]) -> tuple[int, dict[str, Any], float]:
        with self.lock:
            pi = self.intents.get(form.get("payment_intent", ""))
            if pi is None or pi["status"] != "succeeded":
                return 400, self.missing("payment_intent", form.get("payment_intent", "")), 0
            left = pi["amount_received"] - pi["refunded"]
            amount = int(form.get("amount") or left)
            if left == 0:
                return (
                    400,
                    self.error(
                        "invalid_request_error",
                        "charge_already_refunded",
                        f"Charge {pi['latest_charge']} has already been refunded.",
                    ),
                    0,
                )
            if amount <= 0 or amount > left:
                return (
                    400,
                    self.error(
                        "invalid_request_error",
                        "amount_too_large",
                        f"Refund amount ({amount}) is greater than unrefunded amount "
                        f"on charge ({left})",
                        param="amount",
                    ),
                    0,
                )
            pi["refunded"] += amount
            re_id = f"re_{uuid.uuid4().hex[:24]}"
            refund = {
                "id": re_id,
                "object": "refund",
                "amount": amount,
                "currency": pi["currency"],
                "payment_intent": pi["id"],
                "charge": pi["latest_charge"],
                "status": "succeeded",
                "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")},
            }
            self.refunds[re_id] = refund
        return 200, refund, 0
