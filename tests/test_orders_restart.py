"""A server process dies mid-workflow; a new one resumes the order."""

from __future__ import annotations

import signal
import time
from typing import Any

from pba_server.orders import workflows
from pba_server.orders.types import WorkflowStep
from pba_server.orders.types import WorkflowTransition as T
from tests.catalog_support import service_ctx
from tests.conftest import TEST_KEY
from tests.orders_support import buyer, card, gateway, plan
from tests.serverproc import child_env, running
from tests.support import Api, page_items


def _wait(client: Any, order_id: int, status: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        o = client.xmlrpc().OrderGet({"order_id": order_id})
        if o["status"] == status:
            return dict(o)
        if time.monotonic() > deadline:
            raise AssertionError(f"order {order_id} is {o['status']} at {o['current_step']}: {o}")
        time.sleep(0.2)


def _task(client: Any, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        tasks = page_items(client.xmlrpc().TaskList({"status": "open"}))
        if tasks:
            return dict(tasks[0])
        if time.monotonic() > deadline:
            raise AssertionError("no provisioning task appeared")
        time.sleep(0.2)


def test_server_killed_mid_workflow_then_a_new_one_completes_the_order(env, tmp_path):
    p = plan(env)
    acc = buyer(env)
    card(env, acc, gateway(env, tmp_path))
    with service_ctx(env) as ctx:  # the seller wants to approve every sale
        workflows.workflow_set(
            ctx,
            order_type="sales",
            start="screen",
            steps=[
                WorkflowStep("screen", "fraud_screen", [T("*", "approval")]),
                WorkflowStep(
                    "approval", "wait_approval", [T("approved", "invoice"), T("rejected", "no")]
                ),
                WorkflowStep("invoice", "invoice", [T("*", "charge")]),
                WorkflowStep("charge", "charge", [T("paid", "provision"), T("declined", "no")]),
                WorkflowStep("provision", "provision", [T("done", "done"), T("failed", "no")]),
                WorkflowStep("done", "complete"),
                WorkflowStep("no", "reject"),
            ],
        )
    url = env.app.engine.url.render_as_string(hide_password=False)
    child = child_env(PBA_DATABASE_URL=url, PBA_SECRET_KEY=TEST_KEY)
    with running(cwd=tmp_path, env=child) as first:
        client = Api(first.base, env)
        try:
            o = client.xmlrpc().OrderPlace(
                {"account_id": acc, "lines": [{"plan_id": p["plan"]}], "idempotency_key": "r1"}
            )
            # the first server's runner takes it as far as the approval step
            waiting = _wait(client, o["id"], "waiting")
            assert waiting["current_step"] == "approval"
        finally:
            client.close()
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
    with running(cwd=tmp_path, env=child) as second:
        client = Api(second.base, env)
        try:
            assert client.xmlrpc().OrderApprove({"order_id": o["id"]})["status"] == "running"
            # the plan's module is "manual": provisioning waits for a person
            task = _task(client)
            client.xmlrpc().TaskComplete({"task_id": task["id"], "data": []})
            done = _wait(client, o["id"], "completed")
        finally:
            client.close()
    assert done["invoice_id"] and done["charge_id"] and done["subscription_id"]
    steps = [h["action"] for h in done["history"]]
    steps = [a for i, a in enumerate(steps) if i == 0 or steps[i - 1] != a]  # provision: waited
    assert steps[-3:] == ["charge", "provision", "complete"]


def test_kill_between_pending_charge_and_gateway_then_the_order_completes(env, tmp_path):
    """A real server process dies (os._exit) after committing the order's
    pending charge and before calling the gateway. After a restart the charge
    is found unseen (``not_found``: no money moved) once its lease ran out and
    the order charges again with a new key: one capture, no rejection."""
    from sqlalchemy import text

    from pba_server.core.db import UnitOfWork
    from pba_server.core.leases import LEASE

    p = plan(env)
    acc = buyer(env)
    card(env, acc, gateway(env, tmp_path))
    url = env.app.engine.url.render_as_string(hide_password=False)
    crashing = child_env(
        PBA_DATABASE_URL=url, PBA_SECRET_KEY=TEST_KEY, PBA_TEST_CRASH_BEFORE_GATEWAY="1"
    )
    with running(cwd=tmp_path, env=crashing) as first:
        client = Api(first.base, env)
        try:
            o = client.xmlrpc().OrderPlace(
                {"account_id": acc, "lines": [{"plan_id": p["plan"]}], "idempotency_key": "c1"}
            )
        finally:
            client.close()
        assert first.proc.wait(timeout=60) == 87  # died before the gateway call
    with UnitOfWork(env.app.engine) as uow:
        rows = uow.session.execute(text("SELECT status FROM gateway_payments")).all()
    assert [r[0] for r in rows] == ["pending"]
    state = tmp_path / "sandbox.json"
    assert '"captured"' not in (state.read_text() if state.exists() else "")
    child = child_env(PBA_DATABASE_URL=url, PBA_SECRET_KEY=TEST_KEY)
    with running(cwd=tmp_path, env=child) as second:
        started = time.monotonic()
        client = Api(second.base, env)
        try:
            deadline = started + 60
            while True:
                got = client.xmlrpc().OrderGet({"order_id": o["id"]})
                assert got["status"] != "rejected", got
                if any(
                    h["action"] == "charge" and h.get("result") == "captured"
                    for h in got["history"]
                ):
                    break
                assert time.monotonic() < deadline, f"the charge was not recovered: {got}"
                time.sleep(0.2)
            recovered = time.monotonic() - started
            task = _task(client)
            client.xmlrpc().TaskComplete({"task_id": task["id"], "data": []})
            done = _wait(client, o["id"], "completed")
        finally:
            client.close()
    print(
        f"\norder charge recovery after a crash before the gateway: {recovered:.1f} s after "
        f"restart with leases (lease {LEASE.total_seconds():.0f} s); before: the order was "
        "rejected ('payment declined: not_found') once reconciliation ran, 180 s (charge "
        "lease) + 120 s (age threshold) + up to 300 s (reconcile cycle) after the crash"
    )
    assert recovered < 60
    assert done["status"] == "completed" and done["charge_id"]
    with UnitOfWork(env.app.engine) as uow:
        rows = uow.session.execute(
            text("SELECT client_key, status, decline_code FROM gateway_payments ORDER BY id")
        ).all()
        n_payments = uow.session.execute(text("SELECT count(*) FROM payments")).scalar()
    keys = [(r[0], r[1], r[2]) for r in rows]
    assert keys == [
        (f"order:{o['id']}:charge", "declined", "not_found"),
        (f"order:{o['id']}:charge:2", "captured", None),
    ]
    assert n_payments == 1
    assert state.read_text().count('"status": "captured"') == 1  # the money moved once
