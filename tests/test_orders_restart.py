"""A server process dies mid-workflow; a new one resumes the order."""

from __future__ import annotations

import signal
import time
from typing import Any

from pba_server.orders import service as orders
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
        orders.workflow_set(
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
