"""Refunds have leases, as charges do (issue 16): a real server process dies
between committing a pending refund and calling the gateway, or after the
gateway refunded and before our commit; ``payments-recover`` settles the
refund as soon as its lease ran out (no age threshold): never sent ->
rejected ``not_found`` (no money moved, the amount is free again); sent ->
asked again with the same key and recorded once."""

from __future__ import annotations

import xmlrpc.client
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.client import HTTPException
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from pba_server.core.db import UnitOfWork
from pba_server.core.leases import LEASE
from pba_server.payments.charges import payment_charge, payment_charge_get, payment_refund
from pba_server.payments.methods import payment_method_add
from pba_server.payments.plugins import plugin_configure
from pba_server.payments.reconcile import reconcile
from pba_server.payments.types import SettingValue
from tests.billing_support import assert_books_sound, customer
from tests.catalog_support import service_ctx
from tests.conftest import TEST_KEY
from tests.serverproc import child_env, running
from tests.support import Api


def _captured(env: Any, state: Path) -> int:
    with service_ctx(env) as ctx:
        inst = plugin_configure(
            ctx,
            plugin="sandbox_card",
            name="cards",
            settings=[SettingValue("api_key", "sk_test_x"), SettingValue("state_file", str(state))],
        )
    acc = customer(env, "Payer")
    with service_ctx(env) as ctx:
        m = payment_method_add(
            ctx,
            account_id=acc,
            instance_id=inst.id,
            token="tok_approve",
            brand="visa",
            last4="4242",
            expiry_month=1,
            expiry_year=2031,
            holder="A",
        )
        charge = payment_charge(
            ctx, payment_method_id=m.id, amount=Decimal("9"), idempotency_key="c"
        )
    assert charge.status == "captured"
    return charge.id


def _crash_refund(env: Any, tmp_path: Path, charge_id: int, hook: str, code: int) -> None:
    url = env.app.engine.url.render_as_string(hide_password=False)
    child = child_env(PBA_DATABASE_URL=url, PBA_SECRET_KEY=TEST_KEY, **{hook: "1"})
    with running(cwd=tmp_path, env=child) as srv:
        client = Api(srv.base, env)
        try:
            with pytest.raises((xmlrpc.client.ProtocolError, HTTPException, OSError)):
                client.xmlrpc().PaymentRefund(
                    {
                        "charge_id": charge_id,
                        "amount": "4.00",
                        "reason": "x",
                        "idempotency_key": "r",
                    }
                )
        finally:
            client.close()
        assert srv.proc.wait(timeout=30) == code


def _refunds(env: Any) -> list[tuple[Any, ...]]:
    with UnitOfWork(env.app.engine) as uow:
        rows = uow.session.execute(
            text(
                "SELECT status, decline_code, sent_at IS NULL, lease_until IS NULL "
                "FROM gateway_refunds"
            )
        ).all()
    return [tuple(r) for r in rows]


def _recover(env: Any, after: timedelta) -> str:
    """What the fast job (payments-recover) does, ``after`` from now: only rows
    whose lease ran out, no age threshold."""
    env.clock.freeze(datetime.now(UTC) + after)
    with UnitOfWork(env.app.engine) as uow:
        done = reconcile(uow, env.app.runtime, expired_only=True)
        uow.commit()
    return done


def test_a_refund_cut_off_before_the_gateway_is_not_found_at_once(env, tmp_path):
    state = tmp_path / "sandbox.json"
    charge_id = _captured(env, state)
    _crash_refund(env, tmp_path, charge_id, "PBA_TEST_CRASH_BEFORE_REFUND", 88)
    assert _refunds(env) == [("pending", None, True, False)]  # never sent, leased
    _recover(env, timedelta(seconds=5))  # the lease still runs: left alone
    assert _refunds(env)[0][0] == "pending"
    _recover(env, LEASE + timedelta(seconds=1))
    assert _refunds(env) == [("rejected", "not_found", True, True)]
    with service_ctx(env) as ctx:
        assert payment_charge_get(ctx, charge_id=charge_id).refunded == Decimal("0.00")
        again = payment_refund(
            ctx, charge_id=charge_id, amount=Decimal("4"), reason="x", idempotency_key="r2"
        )
    assert again.status == "refunded"
    assert state.read_text().count('"re_') == 1
    assert_books_sound(env)


def test_a_refund_cut_off_after_the_gateway_is_recorded_once(env, tmp_path):
    state = tmp_path / "sandbox.json"
    charge_id = _captured(env, state)
    _crash_refund(env, tmp_path, charge_id, "PBA_TEST_CRASH_AFTER_REFUND", 89)
    assert _refunds(env) == [("pending", None, False, False)]  # sent, leased
    assert state.read_text().count('"re_') == 1  # the money moved
    _recover(env, LEASE + timedelta(seconds=1))
    assert [r[0] for r in _refunds(env)] == ["refunded"]
    with service_ctx(env) as ctx:
        assert payment_charge_get(ctx, charge_id=charge_id).refunded == Decimal("4.00")
        same = payment_refund(
            ctx, charge_id=charge_id, amount=Decimal("4"), reason="x", idempotency_key="r"
        )
    assert same.status == "refunded"
    assert state.read_text().count('"re_') == 1  # asked again by key: refunded once
    assert_books_sound(env)
