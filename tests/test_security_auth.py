"""Authentication through the real endpoints: HTTP Basic on both, WS-Security
UsernameToken (PasswordText and PasswordDigest) on SOAP, API keys, replay and
clock-skew checks, and login throttling."""

from __future__ import annotations

import base64
import hashlib
import xmlrpc.client
from datetime import UTC, datetime, timedelta

import pytest
import requests
import zeep.exceptions
from zeep.wsse.username import UsernameToken

from tests.conftest import ADMIN_PASSWORD

USER_PASSWORD = "user-password-1"

NS_WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
NS_WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
PROFILE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"


def _make_user(api, login="alice", roles=("admin",)):
    provider = api.soap().WhoAmI().account_id
    return api.soap().UserCreate(
        account_id=provider,
        login=login,
        password=USER_PASSWORD,
        full_name="Alice Example",
        roles=list(roles),
    )


def _make_key(api, login="admin", password=None, user_id=None):
    return api.soap(login, password).ApiKeyCreate(name="machine", user_id=user_id)


def _soap_fault(call):
    with pytest.raises(zeep.exceptions.Fault) as e:
        call()
    return e.value


def _xmlrpc_fault(call):
    with pytest.raises(xmlrpc.client.Fault) as e:
        call()
    return e.value


def _wsse(api, token):
    return api.soap_client(login=None, wsse=token).service


def _digest(nonce: bytes, created: str, secret: str) -> str:
    return base64.b64encode(
        hashlib.sha1(nonce + created.encode() + secret.encode()).digest()
    ).decode()


def _raw_digest_envelope(username: str, digest: str, nonce_b64: str, created: str) -> bytes:
    return f"""<?xml version="1.0" encoding="utf-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
    xmlns:wsse="{NS_WSSE}" xmlns:wsu="{NS_WSU}" xmlns:tns="urn:pba-server:v1">
  <soapenv:Header><wsse:Security><wsse:UsernameToken>
    <wsse:Username>{username}</wsse:Username>
    <wsse:Password Type="{PROFILE}#PasswordDigest">{digest}</wsse:Password>
    <wsse:Nonce>{nonce_b64}</wsse:Nonce>
    <wsu:Created>{created}</wsu:Created>
  </wsse:UsernameToken></wsse:Security></soapenv:Header>
  <soapenv:Body><tns:WhoAmI/></soapenv:Body>
</soapenv:Envelope>""".encode()


def _post_soap(server, body):
    return requests.post(
        f"{server}/soap", data=body, headers={"Content-Type": "text/xml"}, timeout=30
    )


# ---------------------------------------------------------------- WS-Security


def test_wsse_password_text_with_user_login(api):
    """A user's login and password in a UsernameToken (PasswordText), no HTTP Basic."""
    me = _wsse(api, UsernameToken("admin", ADMIN_PASSWORD)).WhoAmI()
    assert me.login == "admin"
    assert me.authenticated_by == "password"
    fault = _soap_fault(lambda: _wsse(api, UsernameToken("admin", "wrong-password")).WhoAmI())
    assert fault.code.endswith("Client.AuthFailed")


def test_wsse_password_text_with_api_key(api):
    key = _make_key(api)
    me = _wsse(api, UsernameToken(key.key_id, key.secret)).WhoAmI()
    assert me.login == "admin" and me.authenticated_by == "apikey"


def test_wsse_token_wins_over_http_basic(api):
    """With both present, the UsernameToken is what counts: a good Basic header
    does not rescue a bad token."""
    client = api.soap_client("admin", ADMIN_PASSWORD, wsse=UsernameToken("admin", "nope"))
    fault = _soap_fault(lambda: client.service.WhoAmI())
    assert fault.code.endswith("Client.AuthFailed")


def test_wsse_password_digest_with_api_key(api):
    key = _make_key(api)
    me = _wsse(api, UsernameToken(key.key_id, key.secret, use_digest=True)).WhoAmI()
    assert me.login == "admin" and me.authenticated_by == "apikey"
    # zeep sends a fresh nonce each call: a second call is not a replay
    svc = _wsse(api, UsernameToken(key.key_id, key.secret, use_digest=True))
    assert svc.WhoAmI().login == "admin"
    assert svc.WhoAmI().login == "admin"


def test_wsse_password_digest_wrong_secret(api):
    key = _make_key(api)
    token = UsernameToken(key.key_id, key.secret + "x", use_digest=True)
    fault = _soap_fault(lambda: _wsse(api, token).WhoAmI())
    assert fault.code.endswith("Client.AuthFailed")


def test_wsse_replayed_nonce_is_rejected(api):
    key = _make_key(api)
    created = datetime.now(UTC)
    token = UsernameToken(
        key.key_id, key.secret, use_digest=True, nonce="fixed-nonce-0001", created=created
    )
    svc = _wsse(api, token)
    assert svc.WhoAmI().login == "admin"
    fault = _soap_fault(lambda: svc.WhoAmI())
    assert fault.code.endswith("Client.AuthFailed")
    assert "replay" in fault.message.lower()


def test_wsse_replay_with_reencoded_nonce_is_rejected(server, api):
    """The same nonce bytes written as a different Base64 string ("QQ==" and "QR=="
    both decode to b"A") is still the same nonce: the digest is over the bytes,
    so a captured message must not become replayable by rewriting the text."""
    key = _make_key(api)
    created = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    digest = _digest(b"A", created, key.secret)
    first = _post_soap(server, _raw_digest_envelope(key.key_id, digest, "QQ==", created))
    assert first.status_code == 200, first.text
    second = _post_soap(server, _raw_digest_envelope(key.key_id, digest, "QR==", created))
    assert second.status_code == 500
    assert "Client.AuthFailed" in second.text
    assert "replay" in second.text.lower()


@pytest.mark.parametrize("skew", [timedelta(minutes=-6), timedelta(minutes=6)])
def test_wsse_created_out_of_window_is_rejected(api, skew):
    key = _make_key(api)
    token = UsernameToken(key.key_id, key.secret, use_digest=True, created=datetime.now(UTC) + skew)
    fault = _soap_fault(lambda: _wsse(api, token).WhoAmI())
    assert fault.code.endswith("Client.AuthFailed")
    assert "5 minutes" in fault.message


def test_wsse_created_inside_window_follows_server_clock(api, env):
    """The window is measured against the server's clock (injected), not the test's."""
    key = _make_key(api)
    at = datetime.now(UTC).replace(microsecond=0)
    env.clock.freeze(at + timedelta(minutes=4))
    token = UsernameToken(key.key_id, key.secret, use_digest=True, created=at)
    assert _wsse(api, token).WhoAmI().login == "admin"
    env.clock.freeze(at + timedelta(minutes=5, seconds=30))
    token = UsernameToken(key.key_id, key.secret, use_digest=True, created=at)
    fault = _soap_fault(lambda: _wsse(api, token).WhoAmI())
    assert "5 minutes" in fault.message


def test_wsse_digest_with_user_login_is_rejected_clearly(api):
    token = UsernameToken("admin", ADMIN_PASSWORD, use_digest=True)
    fault = _soap_fault(lambda: _wsse(api, token).WhoAmI())
    assert fault.code.endswith("Client.AuthFailed")
    assert "API credentials" in fault.message
    assert "ApiKeyCreate" in fault.message


# ---------------------------------------------------------------- HTTP Basic + API keys


def test_basic_with_api_key_on_both_endpoints(api):
    key = _make_key(api)
    assert api.soap(key.key_id, key.secret).WhoAmI().authenticated_by == "apikey"
    assert api.xmlrpc(key.key_id, key.secret).WhoAmI({})["authenticated_by"] == "apikey"
    fault = _soap_fault(lambda: api.soap(key.key_id, "wrong").WhoAmI())
    assert fault.code.endswith("Client.AuthFailed")
    assert _xmlrpc_fault(lambda: api.xmlrpc(key.key_id, "wrong").WhoAmI({})).faultCode == 4010


def test_revoked_key_stops_at_once(api):
    key = _make_key(api)
    soap = api.soap(key.key_id, key.secret)
    rpc = api.xmlrpc(key.key_id, key.secret)
    digest = _wsse(api, UsernameToken(key.key_id, key.secret, use_digest=True))
    assert soap.WhoAmI().login == rpc.WhoAmI({})["login"] == digest.WhoAmI().login == "admin"
    revoked = api.soap().ApiKeyRevoke(key_id=key.key_id)
    assert revoked.revoked_at is not None
    assert _soap_fault(lambda: soap.WhoAmI()).code.endswith("Client.AuthFailed")
    assert _xmlrpc_fault(lambda: rpc.WhoAmI({})).faultCode == 4010
    assert _soap_fault(lambda: digest.WhoAmI()).code.endswith("Client.AuthFailed")


def test_disabled_user_stops_at_once_despite_cache(api):
    user = _make_user(api)
    key = _make_key(api, "alice", USER_PASSWORD)
    soap = api.soap("alice", USER_PASSWORD)
    rpc = api.xmlrpc("alice", USER_PASSWORD)
    wsse = _wsse(api, UsernameToken("alice", USER_PASSWORD))
    by_key = api.xmlrpc(key.key_id, key.secret)
    for _ in range(2):  # the second round is served from the verified-password cache
        assert soap.WhoAmI().login == "alice"
        assert rpc.WhoAmI({})["login"] == "alice"
        assert wsse.WhoAmI().login == "alice"
        assert by_key.WhoAmI({})["login"] == "alice"
    api.soap().UserDisable(user_id=user.id)
    # the right password of a disabled user is answered exactly as a wrong one
    wrong = _soap_fault(lambda: api.soap("alice", "wrong-password").WhoAmI())
    disabled = _soap_fault(lambda: soap.WhoAmI())
    assert (disabled.code, disabled.message) == (wrong.code, wrong.message)
    assert "disabled" not in disabled.message
    # (each counts as a failed login, as a wrong password does: four here)
    disabled_rpc = _xmlrpc_fault(lambda: rpc.WhoAmI({}))
    assert disabled_rpc.faultString == f"Client.AuthFailed: {wrong.message}"
    assert _soap_fault(lambda: wsse.WhoAmI()).code.endswith("Client.AuthFailed")
    assert _xmlrpc_fault(lambda: by_key.WhoAmI({})).faultCode == 4010
    api.soap().UserEnable(user_id=user.id)
    assert soap.WhoAmI().login == "alice"


def test_password_change_invalidates_cached_password(api):
    user = _make_user(api)
    soap = api.soap("alice", USER_PASSWORD)
    assert soap.WhoAmI().login == "alice"
    api.soap().UserSetPassword(user_id=user.id, password="another-password-2")
    assert _soap_fault(lambda: soap.WhoAmI()).code.endswith("Client.AuthFailed")
    assert api.soap("alice", "another-password-2").WhoAmI().login == "alice"


# ---------------------------------------------------------------- failures and throttling


def test_wrong_password_and_no_credentials(api):
    fault = _soap_fault(lambda: api.soap("admin", "wrong").WhoAmI())
    assert fault.code.endswith("Client.AuthFailed")
    x = _xmlrpc_fault(lambda: api.xmlrpc("admin", "wrong").WhoAmI({}))
    assert x.faultCode == 4010 and x.faultString.startswith("Client.AuthFailed:")
    fault = _soap_fault(lambda: api.soap(None).WhoAmI())
    assert fault.code.endswith("Client.AuthFailed")
    x = _xmlrpc_fault(lambda: api.xmlrpc(None).WhoAmI({}))
    assert x.faultCode == 4010
    # an unknown login looks exactly like a wrong password
    unknown = _soap_fault(lambda: api.soap("nobody", "wrong").WhoAmI())
    assert unknown.message == _soap_fault(lambda: api.soap("admin", "wrong").WhoAmI()).message


def _soap_code(api, login, password):
    try:
        api.soap(login, password).WhoAmI()
    except zeep.exceptions.Fault as f:
        return f.code.rsplit(":", 1)[-1]
    return "OK"


def _xmlrpc_code(api, login, password):
    try:
        api.xmlrpc(login, password).WhoAmI({})
    except xmlrpc.client.Fault as f:
        return f.faultCode
    return "OK"


@pytest.mark.parametrize("proto", ["soap", "xmlrpc"])
def test_failed_logins_are_throttled(api, env, proto):
    code = _soap_code if proto == "soap" else _xmlrpc_code
    failed, throttled = (
        ("Client.AuthFailed", "Client.TooManyAttempts") if proto == "soap" else (4010, 4011)
    )
    _make_user(api)
    env.clock.freeze(datetime.now(UTC))
    for _ in range(5):
        assert code(api, "alice", "wrong") == failed
    # now locked out for this login from this address, even with the right password
    assert code(api, "alice", "wrong") == throttled
    assert code(api, "alice", USER_PASSWORD) == throttled
    # other logins are not affected
    assert code(api, "admin", ADMIN_PASSWORD) == "OK"
    env.clock.advance(timedelta(seconds=2))
    assert code(api, "alice", USER_PASSWORD) == "OK"
    # the success reset the counter: a few failures are free again
    for _ in range(5):
        assert code(api, "alice", "wrong") == failed
    assert code(api, "alice", "wrong") == throttled


def test_throttle_backoff_grows(api, env):
    _make_user(api)
    env.clock.freeze(datetime.now(UTC))
    for _ in range(5):
        assert _soap_code(api, "alice", "wrong") == "Client.AuthFailed"
    env.clock.advance(timedelta(seconds=2))  # 1 s backoff after 5 failures
    assert _soap_code(api, "alice", "wrong") == "Client.AuthFailed"  # 6th failure: 2 s
    env.clock.advance(timedelta(seconds=1))
    assert _soap_code(api, "alice", USER_PASSWORD) == "Client.TooManyAttempts"
    env.clock.advance(timedelta(seconds=2))
    assert _soap_code(api, "alice", USER_PASSWORD) == "OK"


def test_throttle_applies_to_a_cached_password_too(api, env):
    """A recent success puts the password in the in-memory cache; a lockout must
    still hold, or the lockout would be an oracle telling a guesser which guess
    is right (wrong ones: TooManyAttempts, the right one: success)."""
    _make_user(api)
    assert _soap_code(api, "alice", USER_PASSWORD) == "OK"
    env.clock.freeze(datetime.now(UTC))
    for _ in range(5):
        assert _soap_code(api, "alice", "wrong") == "Client.AuthFailed"
    assert _soap_code(api, "alice", USER_PASSWORD) == "Client.TooManyAttempts"
    assert _xmlrpc_code(api, "alice", USER_PASSWORD) == 4011
    env.clock.advance(timedelta(seconds=2))
    assert _soap_code(api, "alice", USER_PASSWORD) == "OK"
    for _ in range(5):
        assert _soap_code(api, "alice", "wrong") == "Client.AuthFailed"
    assert _soap_code(api, "alice", "wrong") == "Client.TooManyAttempts"


def test_api_key_failures_are_throttled(api, env):
    key = _make_key(api)
    env.clock.freeze(datetime.now(UTC))
    for _ in range(5):
        assert _xmlrpc_code(api, key.key_id, "wrong") == 4010
    assert _xmlrpc_code(api, key.key_id, "wrong") == 4011
    assert _soap_code(api, key.key_id, "wrong") == "Client.TooManyAttempts"


class _FromAddress(xmlrpc.client.Transport):
    """XML-RPC from another loopback address (Linux routes all of 127/8 locally)."""

    def __init__(self, address: str) -> None:
        super().__init__()
        self._address = address

    def make_connection(self, host):
        conn = super().make_connection(host)
        conn.source_address = (self._address, 0)
        return conn


def test_throttle_is_per_source_address(server, api, env):
    _make_user(api)
    env.clock.freeze(datetime.now(UTC))
    for _ in range(5):
        assert _xmlrpc_code(api, "alice", "wrong") == 4010
    assert _xmlrpc_code(api, "alice", USER_PASSWORD) == 4011
    host = server.removeprefix("http://")
    other = xmlrpc.client.ServerProxy(
        f"http://alice:{USER_PASSWORD}@{host}/xmlrpc", transport=_FromAddress("127.0.0.2")
    )
    try:
        assert other.WhoAmI({})["login"] == "alice"
    finally:
        other("close")()
    assert _xmlrpc_code(api, "alice", USER_PASSWORD) == 4011  # still locked from 127.0.0.1


def test_failed_logins_do_not_flood_the_log_with_tracebacks(server, api, caplog, monkeypatch):
    import logging

    from pba_server.bootstrap import configure_logging

    for name in ("spyne", "twisted", "alembic", "spyne.application.client"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.getLogger(name).level)
    configure_logging("INFO")
    caplog.set_level(logging.INFO, logger="pba")
    for _ in range(3):
        assert _soap_code(api, "admin", "wrong") == "Client.AuthFailed"
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_concurrent_replays_only_one_wins(server, api):
    """The same digest message sent 8 times at once: the database's uniqueness
    on the nonce, not a check in Python, lets exactly one through."""
    from concurrent.futures import ThreadPoolExecutor

    key = _make_key(api)
    created = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    nonce = b"0123456789abcdef"
    body = _raw_digest_envelope(
        key.key_id, _digest(nonce, created, key.secret), base64.b64encode(nonce).decode(), created
    )
    with ThreadPoolExecutor(8) as ex:
        replies = list(ex.map(lambda _i: _post_soap(server, body), range(8)))
    assert sorted(r.status_code for r in replies) == [200] + [500] * 7
    for r in replies:
        if r.status_code == 500:
            assert "Client.AuthFailed" in r.text and "replay" in r.text, r.text


def test_idempotent_results_are_not_kept_in_clear(api, env):
    """ApiKeyCreate's secret is shown once; its stored replay copy is encrypted."""
    from sqlalchemy import select

    from pba_server.core.db import UnitOfWork
    from pba_server.core.models import IdempotencyKey

    svc = api.soap()
    first = svc.ApiKeyCreate(name="ci", idempotency_key="key-once")
    again = svc.ApiKeyCreate(name="ci", idempotency_key="key-once")
    assert again.secret == first.secret and again.key_id == first.key_id
    with UnitOfWork(env.app.engine) as uow:
        stored = uow.session.scalars(select(IdempotencyKey.response)).all()
    assert stored and all(first.secret not in r for r in stored)


def test_card_numbers_are_refused_in_any_operation(api, server):
    """A PAN pasted anywhere (here an account name and a contact) is refused on
    both protocols, not stored, and not repeated in the fault or the log."""
    pan = "4111 1111 1111 1111"
    with pytest.raises(xmlrpc.client.Fault) as x:
        api.xmlrpc().AccountCreate({"type": "customer_personal", "name": pan})
    f = x.value
    assert f.faultCode == 4001 and "card number" in f.faultString
    assert "4111" not in f.faultString
    with pytest.raises(zeep.exceptions.Fault) as e:
        api.soap().AccountCreate(
            type="customer_personal",
            name="Ok",
            contacts=[
                {
                    "kind": "billing",
                    "name": "x",
                    "email": "a@b.example",
                    "phone": "4111-1111-1111-1111",
                }
            ],
        )
    assert "contacts[0].phone" in e.value.message and "4111" not in e.value.message
    assert api.xmlrpc().AccountList({})["total"] == 0
    # ordinary numbers are fine: a phone number, an order number that fails Luhn
    acc = api.xmlrpc().AccountCreate(
        {"type": "customer_personal", "name": "Order 4111111111111112"}
    )
    assert acc["name"].endswith("4111111111111112")
