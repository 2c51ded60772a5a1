"""Every mutation takes an idempotency key: a client that lost an answer asks
again with the same key and gets the first answer, through the real SOAP and
XML-RPC endpoints (each test on both protocols and both databases)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from pba_server.accounts import users
from pba_server.accounts.models import User
from pba_server.core import idempotency
from pba_server.core.db import UnitOfWork
from pba_server.sdk.provisioning import FinalFailure, RetryableFailure
from tests.billing_support import assert_books_sound
from tests.catalog_support import Caller, service_ctx
from tests.prov_support import Script, fake_module, plan, provision, run, subscribe
from tests.support import page_items

__all__ = ["fake_module"]

PW = "a-long-password-1"


@pytest.fixture(params=["soap", "xmlrpc"])
def call(request: pytest.FixtureRequest, api: Any, env: Any) -> Any:
    yield Caller(api, request.param)
    assert_books_sound(env)


def _customer(call: Caller) -> int:
    return int(
        call(
            "AccountCreate",
            type="customer_business",
            name="Acme",
            country="DE",
            credit_limit=Decimal("500.00"),
        )["id"]
    )


def _draft(call: Caller, acc: int, price: str = "20.00") -> dict[str, Any]:
    return dict(
        call(
            "InvoiceCreate",
            account_id=acc,
            lines=[{"description": "Setup fee", "unit_price": Decimal(price)}],
        )
    )


def test_a_retried_invoice_issue_gets_the_first_answer(call: Caller) -> None:
    acc = _customer(call)
    draft = _draft(call, acc)
    issued = call("InvoiceIssue", invoice_id=draft["id"], idempotency_key="issue-1")
    assert issued["status"] == "issued" and issued["number"]
    # the answer was lost; meanwhile the invoice got paid
    call(
        "PaymentRecord",
        account_id=acc,
        amount=Decimal(issued["total"]),
        method="bank_transfer",
        reference="SEPA-1",
        received_on=datetime.now(UTC).date().isoformat(),
        invoice_ids=[draft["id"]],
    )
    assert call("InvoiceGet", invoice_id=draft["id"])["status"] == "paid"
    again = call("InvoiceIssue", invoice_id=draft["id"], idempotency_key="issue-1")
    assert again == issued
    # without the key a client cannot tell success from failure
    code, msg = call.fault("InvoiceIssue", invoice_id=draft["id"])
    assert code == "Client.InvalidState" and "paid" in msg
    # the key with other parameters is a conflict, not a replay
    other = _draft(call, acc)
    code, _ = call.fault("InvoiceIssue", invoice_id=other["id"], idempotency_key="issue-1")
    assert code == "Client.Conflict"
    assert call("InvoiceGet", invoice_id=other["id"])["status"] == "draft"


def test_void_allocate_and_a_setter_replay(call: Caller) -> None:
    acc = _customer(call)
    draft = _draft(call, acc)
    void = call("InvoiceVoid", invoice_id=draft["id"], reason="mistake", idempotency_key="v-1")
    assert void["status"] == "void"
    assert call("InvoiceVoid", invoice_id=draft["id"], reason="mistake", idempotency_key="v-1") == (
        void
    )
    code, _ = call.fault("InvoiceVoid", invoice_id=draft["id"], reason="mistake")
    assert code == "Client.InvalidState"

    inv = call("InvoiceCreate", account_id=acc, lines=[{"description": "x", "unit_price": 5}])
    inv = call("InvoiceIssue", invoice_id=inv["id"])
    pay = call(
        "PaymentRecord",
        account_id=acc,
        amount=Decimal("100.00"),
        method="bank_transfer",
        reference="SEPA-2",
        received_on=datetime.now(UTC).date().isoformat(),
        allocate=False,
    )
    first = call("PaymentAllocate", payment_id=pay["id"], idempotency_key="alloc-1")
    assert [a["invoice_id"] for a in first["allocations"]] == [inv["id"]]
    assert call("PaymentAllocate", payment_id=pay["id"], idempotency_key="alloc-1") == first
    assert call("InvoiceGet", invoice_id=inv["id"])["status"] == "paid"

    terms = call("PaymentTermsSet", account_id=acc, net_days=30, idempotency_key="t-1")
    assert call("PaymentTermsSet", account_id=acc, net_days=30, idempotency_key="t-1") == terms
    code, _ = call.fault("PaymentTermsSet", account_id=acc, net_days=45, idempotency_key="t-1")
    assert code == "Client.Conflict"


def test_a_retried_billing_run_gets_the_first_summary(call: Caller) -> None:
    first = call("BillingRun", as_of="2026-02-16", idempotency_key="run-2026-02-16")
    again = call("BillingRun", as_of="2026-02-16", idempotency_key="run-2026-02-16")
    assert again == first


def test_task_complete_and_operation_retry_replay(
    env: Any, call: Caller, fake_module: Script
) -> None:
    env.clock.freeze(env.clock.now())
    call(
        "ProcessingModuleConfigure",
        plugin="fake_prov",
        name="fra-1",
        settings=[{"name": "url", "value": "https://panel"}],
    )
    cust = _customer(call)
    version = plan(env)
    first = subscribe(env, cust, version)
    provision(env, first)
    run(env)
    (svc,) = page_items(call("ServiceList", account_id=cust))
    fake_module.then("sync", FinalFailure("no such VM"))
    sync = call("ServiceSync", service_id=svc["id"], idempotency_key="sync-1")
    assert call("ServiceSync", service_id=svc["id"], idempotency_key="sync-1") == sync
    run(env)
    retried = call("OperationRetry", operation_id=sync["id"], idempotency_key="retry-1")
    assert retried["status"] == "pending"
    assert call("OperationRetry", operation_id=sync["id"], idempotency_key="retry-1") == retried
    run(env)
    code, _ = call.fault("OperationRetry", operation_id=sync["id"])
    assert code == "Client.InvalidState"

    second = subscribe(env, cust, version)
    provision(env, second)
    fake_module.then("create", *[RetryableFailure("down")] * 3)
    for _ in range(3):
        run(env)
        env.clock.advance(timedelta(minutes=5))
    (task,) = page_items(call("TaskList", status="open"))
    data = [{"name": "platform_id", "value": "vm-7"}]
    done = call("TaskComplete", task_id=task["id"], data=data, idempotency_key="done-1")
    assert done["status"] == "completed"
    assert call("TaskComplete", task_id=task["id"], data=data, idempotency_key="done-1") == done
    code, _ = call.fault("TaskComplete", task_id=task["id"], data=data)
    assert code == "Client.InvalidState"


def test_a_retried_own_password_change_answers_true(env: Any, api: Any, call: Caller) -> None:
    with service_ctx(env) as ctx:
        uid = users.user_create(
            ctx,
            account_id=ctx.principal.account_id,
            login="bob",
            password=PW,
            full_name="Bob",
            roles=["billing"],
        ).id
    new = "another-long-password-2"
    bob = Caller(api, call.protocol, "bob", PW)
    assert bob("UserSetPassword", user_id=uid, password=new, idempotency_key="pw-1") is True
    # the retry authenticates with what works now: the new password
    bob_now = Caller(api, call.protocol, "bob", new)
    assert bob_now("UserSetPassword", user_id=uid, password=new, idempotency_key="pw-1") is True
    assert bob_now("UserSetPassword", user_id=uid, password=new) is True  # no key: same effect
    code, _ = bob.fault("UserSetPassword", user_id=uid, password=new, idempotency_key="pw-1")
    assert code == "Client.AuthFailed"  # the old password never works again


def test_keys_are_kept_for_the_retention_period(env: Any) -> None:
    now = env.clock.now()
    assert env.app.settings.idempotency_retention_days == 7  # the default setting
    with UnitOfWork(env.app.engine) as uow:
        uid = uow.session.scalar(select(User.id).limit(1))
        assert uid is not None
        for key, age in (("six-days", 6), ("eight-days", 8)):
            idempotency.store(uow.session, uid, key, "X", "h", "{}", now - timedelta(days=age))
        uow.commit()
    with UnitOfWork(env.app.engine) as uow:
        assert idempotency.purge(uow.session, now) == 1
        assert idempotency.purge(uow.session, now, days=1) == 1
        uow.commit()
