"""Invariants of the books for any sequence of money operations (hypothesis),
on SQLite and PostgreSQL, and ``pba-server verify-ledger`` as a real process."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from pba_server.billing.balances import account_balance_get, balance_adjust
from pba_server.billing.credit_notes import credit_note_create
from pba_server.billing.invoices import invoice_create, invoice_get, invoice_issue, invoice_void
from pba_server.billing.models import CreditNote, Invoice
from pba_server.billing.payments import payment_allocate, payment_record
from pba_server.billing.statements import statement_get
from pba_server.billing.tax import line_amounts
from pba_server.billing.tax_rules import tax_rule_set
from pba_server.billing.types import CreditNoteLineInput, InvoiceLineInput
from pba_server.core.db import UnitOfWork
from pba_server.core.errors import InvalidState, ValidationError
from pba_server.core.money import quantize
from tests.billing_support import assert_books_sound, customer
from tests.catalog_support import service_ctx
from tests.serverproc import cli as run_cli

D = Decimal
cents = st.integers(min_value=1, max_value=500_00).map(lambda c: D(c) / 100)
rates = st.sampled_from([D(0), D(7), D("19"), D("8.875"), D("20")])

# ---------------------------------------------------------------- pure tax rules


@given(
    qty=st.integers(1, 1000).map(lambda q: D(q) / 4),
    price=cents,
    rate=rates,
    inclusive=st.booleans(),
    currency=st.sampled_from(["USD", "JPY", "KWD"]),
)
def test_line_amounts_add_up_and_round_once(qty, price, rate, inclusive, currency):
    a = line_amounts(qty, price, D(0), rate, inclusive=inclusive, currency=currency)
    assert a.net + a.tax == a.total
    for v in (a.net, a.tax, a.total):
        assert v == quantize(v, currency) and v >= 0
    gross = quantize(qty * price, currency)
    if inclusive:
        assert a.total == gross
    else:
        assert a.net == gross and a.tax == quantize(gross * rate / 100, currency)


# ---------------------------------------------------------------- the books

op = st.one_of(
    st.tuples(st.just("invoice"), st.lists(cents, min_size=1, max_size=3), st.booleans()),
    st.tuples(st.just("issue"), st.integers(0, 7)),
    st.tuples(st.just("credit"), st.integers(0, 7), st.sampled_from([None, D("0.5"), D("0.01")])),
    st.tuples(st.just("pay"), cents, st.sampled_from([None, 0, 1])),
    st.tuples(st.just("allocate"), st.integers(0, 3)),
    st.tuples(st.just("adjust"), st.integers(-10000, 10000).map(lambda c: D(c) / 100)),
    st.tuples(st.just("void"), st.integers(0, 7)),
)


def _apply(env, acc: int, invoices: list[int], payments: list[int], step: tuple) -> None:
    today = datetime.now(UTC).date()
    kind = step[0]
    with service_ctx(env) as ctx:
        if kind == "invoice":
            inv = invoice_create(
                ctx,
                account_id=acc,
                lines=[
                    InvoiceLineInput(f"L{i}", p, tax_inclusive=i % 2 == 1)
                    for i, p in enumerate(step[1])
                ],
                issue=step[2],
            )
            invoices.append(inv.id)
        elif kind == "issue" and invoices:
            invoice_issue(ctx, invoice_id=invoices[step[1] % len(invoices)])
        elif kind == "credit" and invoices:
            inv = invoice_get(ctx, invoice_id=invoices[step[1] % len(invoices)])
            lines = None
            if step[2] is not None:
                ln = inv.lines[0]
                lines = [CreditNoteLineInput(ln.id, quantize(ln.total * step[2], "EUR"))]
            credit_note_create(ctx, invoice_id=inv.id, reason="test", lines=lines)
        elif kind == "pay":
            named = None if step[2] is None or not invoices else [invoices[step[2] % len(invoices)]]
            p = payment_record(
                ctx,
                account_id=acc,
                amount=step[1],
                method="bank_transfer",
                reference="r",
                received_on=today,
                invoice_ids=named,
            )
            payments.append(p.id)
        elif kind == "allocate" and payments:
            payment_allocate(ctx, payment_id=payments[step[1] % len(payments)])
        elif kind == "adjust" and step[1]:
            balance_adjust(ctx, account_id=acc, amount=step[1], reason="test")
        elif kind == "void" and invoices:
            invoice_void(ctx, invoice_id=invoices[step[1] % len(invoices)], reason="t")


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(op, min_size=1, max_size=10))
def test_any_sequence_keeps_the_books_sound(env, steps):
    with service_ctx(env) as ctx:
        tax_rule_set(ctx, buyer_country="DE", name="VAT", rate=D(19))
    acc = customer(env, "H", country="DE")
    invoices: list[int] = []
    payments: list[int] = []
    for step in steps:
        try:
            _apply(env, acc, invoices, payments, step)
            event(f"{step[0]} done")
        except (InvalidState, ValidationError) as exc:
            # refused: rolled back whole, which the checks of the books below confirm
            event(f"{step[0]} refused: {type(exc).__name__}")
    assert_books_sound(env)
    today = datetime.now(UTC).date()
    with service_ctx(env) as ctx:
        bal = account_balance_get(ctx, account_id=acc)
        st_ = statement_get(ctx, account_id=acc, date_from=date(2000, 1, 1), date_to=today)
        assert st_.closing_balance == bal.balance
        assert st_.lines == [] or st_.lines[-1].balance == bal.balance
        for i in invoices:
            inv = invoice_get(ctx, invoice_id=i)
            assert 0 <= inv.paid <= inv.total and inv.paid + inv.credited <= inv.total
    with UnitOfWork(env.app.engine) as uow:
        for model in (Invoice, CreditNote):
            seqs = sorted(s for s in uow.session.scalars(select(model.seq)) if s is not None)
            assert seqs == list(range(1, len(seqs) + 1)), model.__name__


# ---------------------------------------------------------------- verify-ledger


def test_verify_ledger_as_a_process(env, tmp_path):
    acc = customer(env, country=None)
    with service_ctx(env) as ctx:
        invoice_create(ctx, account_id=acc, lines=[InvoiceLineInput("x", D("10.00"))], issue=True)
        payment_record(
            ctx,
            account_id=acc,
            amount=D("4.00"),
            method="cash",
            reference="r",
            received_on=datetime.now(UTC).date(),
        )
    url = env.app.engine.url.render_as_string(hide_password=False)
    ok = run_cli("verify-ledger", "--database", url, cwd=tmp_path)
    assert (ok.returncode, ok.stdout.strip()) == (0, "ledger ok"), ok.stderr
    with env.app.engine.begin() as conn:  # tamper with the cache behind the ledger's back
        conn.execute(text("UPDATE account_balances SET receivable = receivable + 1"))
    bad = run_cli("verify-ledger", "--database", url, cwd=tmp_path)
    assert bad.returncode == 1
    assert f"account {acc}" in bad.stdout and "mismatch" in bad.stderr
    with env.app.engine.begin() as conn:
        conn.execute(text("UPDATE account_balances SET receivable = receivable - 1"))


@pytest.mark.parametrize("args", [["verify-ledger", "--help"]])
def test_verify_ledger_help(args, tmp_path):
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 0 and "usage: pba-server verify-ledger" in r.stdout
