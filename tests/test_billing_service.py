"""The money core at the service layer, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from pba_server.accounts import tree, users
from pba_server.accounts.types import ContactInput
from pba_server.billing import ledger
from pba_server.billing.balances import account_balance_get, balance_adjust, check_credit
from pba_server.billing.credit_notes import credit_note_create, credit_note_get, credit_note_list
from pba_server.billing.invoices import (
    invoice_add_line,
    invoice_create,
    invoice_get,
    invoice_issue,
    invoice_list,
    invoice_render,
    invoice_void,
)
from pba_server.billing.models import Invoice, LedgerEntry, LedgerTransaction
from pba_server.billing.numbering import document_number_format_set
from pba_server.billing.payments import payment_allocate, payment_list, payment_record
from pba_server.billing.rules import plan_lines
from pba_server.billing.statements import statement_get
from pba_server.billing.tax_rules import tax_rule_list, tax_rule_remove, tax_rule_set
from pba_server.billing.terms import payment_terms_set
from pba_server.billing.types import CreditNoteLineInput, InvoiceLineInput
from pba_server.catalog.plans import plan_create, plan_publish
from pba_server.catalog.quotes import price_quote
from pba_server.catalog.templates import service_template_create
from pba_server.catalog.types import PlanPeriod, PriceQuoteInfo, QuoteLine
from pba_server.core import audit
from pba_server.core.db import UnitOfWork
from pba_server.core.errors import (
    CreditLimitExceeded,
    Forbidden,
    InvalidState,
    NotFound,
    ValidationError,
)
from tests.billing_support import assert_books_sound, customer
from tests.catalog_support import service_ctx

D = Decimal
YEAR = datetime.now(UTC).year


def line(desc: str = "Setup", price: str = "100.00", **kw) -> InvoiceLineInput:
    return InvoiceLineInput(description=desc, unit_price=D(price), **kw)


def vat(env, rate: str = "19", **kw) -> int:
    with service_ctx(env) as ctx:
        return tax_rule_set(ctx, buyer_country="DE", name="VAT", rate=D(rate), **kw).id


def invoice(env, acc: int, *lines: InvoiceLineInput, issue: bool = True, **kw):
    with service_ctx(env) as ctx:
        return invoice_create(ctx, account_id=acc, lines=list(lines) or [line()], issue=issue, **kw)


def balance(env, acc: int):
    with service_ctx(env) as ctx:
        return account_balance_get(ctx, account_id=acc)


@pytest.fixture(autouse=True)
def _books_sound_after(env):
    yield
    assert_books_sound(env)


def test_issue_numbers_taxes_and_books(env):
    vat(env)
    acc = customer(env)
    inv = invoice(
        env,
        acc,
        line("Hosting", "10.00", quantity=D(3), discount=D("1.00")),
        line("Domain", "11.90", tax_inclusive=True),
        line("Odd", "0.05"),
    )
    assert inv.number == f"INV-{YEAR}-000001" and inv.status == "issued"
    assert [(ln.net, ln.tax, ln.total) for ln in inv.lines] == [
        (D("29.00"), D("5.51"), D("34.51")),
        (D("10.00"), D("1.90"), D("11.90")),
        (D("0.05"), D("0.01"), D("0.06")),
    ]
    assert (inv.subtotal, inv.tax_total, inv.total) == (D("39.05"), D("7.42"), D("46.47"))
    assert inv.due_date == datetime.now(UTC).date()  # net 0 by default
    second = invoice(env, acc)
    assert second.number == f"INV-{YEAR}-000002"
    b = balance(env, acc)
    assert (b.balance, b.receivable, b.credit) == (D("165.47"), D("165.47"), D(0))
    with UnitOfWork(env.app.engine) as uow:
        sums = dict(
            uow.session.execute(
                select(LedgerEntry.ledger_account, func.sum(LedgerEntry.amount)).group_by(
                    LedgerEntry.ledger_account
                )
            ).all()
        )
    assert sums == {"receivable": D("165.47"), "revenue": D("-139.05"), "tax_payable": D("-26.42")}


def test_draft_lines_then_issue_with_terms_and_format(env):
    acc = customer(env, country=None)
    with service_ctx(env) as ctx:
        payment_terms_set(ctx, account_id=acc, net_days=14)
        fmt = document_number_format_set(ctx, kind="invoice", format="P{seq:04d}/{year}")
        assert fmt.format == "P{seq:04d}/{year}"
        with pytest.raises(ValidationError):
            document_number_format_set(ctx, kind="invoice", format="{seq.__class__}")
        with pytest.raises(ValidationError):
            document_number_format_set(ctx, kind="invoice", format="no number")
    draft = invoice(env, acc, issue=False)
    assert draft.status == "draft" and draft.number is None
    with service_ctx(env) as ctx:
        inv = invoice_add_line(
            ctx,
            invoice_id=draft.id,
            line=line(
                "Traffic overage",
                "0.10",
                quantity=D("12.5"),
                link_type="usage",
                period_start=date(2026, 1, 1),
                period_end=date(2026, 1, 31),
            ),
        )
        assert inv.total == D("101.25") and len(inv.lines) == 2
        inv = invoice_issue(ctx, invoice_id=draft.id)
        assert inv.number == f"P0001/{YEAR}"
        assert inv.due_date == datetime.now(UTC).date() + timedelta(days=14)
        with pytest.raises(InvalidState):
            invoice_add_line(ctx, invoice_id=draft.id, line=line())
        with pytest.raises(InvalidState):
            invoice_issue(ctx, invoice_id=draft.id)


def test_reverse_charge_by_tax_id_and_regional_rule(env):
    vat(env, reverse_charge=True)
    with service_ctx(env) as ctx:
        tax_rule_set(ctx, buyer_country="US", buyer_region="NY", name="NY", rate=D("8.875"))
        tax_rule_set(ctx, buyer_country="US", name="US", rate=D(0))
    b2b = customer(env, "B2B", tax_id="DE123456789")
    inv = invoice(env, b2b)
    assert inv.reverse_charge and inv.tax_total == 0 and "Reverse charge" in (inv.notes or "")
    assert "DE123456789" in (inv.notes or "")
    b2c = customer(env, "B2C")
    assert invoice(env, b2c).tax_total == D("19.00")
    with service_ctx(env) as ctx:
        ny = tree.account_create(
            ctx,
            type="customer_personal",
            name="NY",
            country="US",
            contacts=[ContactInput(kind="billing", name="N", email="n@example.com", state="NY")],
        ).id
    assert invoice(env, ny).tax_total == D("8.88")
    with service_ctx(env) as ctx:
        assert [r.name for r in tax_rule_list(ctx).items] == ["VAT", "US", "NY"]
        rule = tax_rule_list(ctx).items[0]
        assert tax_rule_remove(ctx, tax_rule_id=rule.id)
        assert [r.name for r in tax_rule_list(ctx).items] == ["US", "NY"]
    assert invoice(env, b2c).tax_total == 0


def test_payments_oldest_first_named_and_credit(env):
    acc = customer(env, country=None)
    a = invoice(env, acc, line(price="30.00"))
    b = invoice(env, acc, line(price="50.00"))
    c = invoice(env, acc, line(price="20.00"))
    today = datetime.now(UTC).date()
    with service_ctx(env) as ctx:
        p = payment_record(
            ctx,
            account_id=acc,
            amount=D("40.00"),
            method="bank_transfer",
            reference="TX-1",
            received_on=today,
        )
        assert [(x.invoice_id, x.amount) for x in p.allocations] == [(a.id, D(30)), (b.id, D(10))]
        p2 = payment_record(
            ctx,
            account_id=acc,
            amount=D("100.00"),
            method="cheque",
            reference="CHQ-7",
            received_on=today,
            invoice_ids=[c.id],
        )
        assert [(x.invoice_id, x.amount) for x in p2.allocations] == [(c.id, D(20))]
        assert p2.unallocated == D(80)
        got = {i: invoice_get(ctx, invoice_id=i) for i in (a.id, b.id, c.id)}
        assert [got[i].status for i in (a.id, b.id, c.id)] == [
            "paid",
            "overdue" if False else "partially_paid",
            "paid",
        ]
        p2 = payment_allocate(ctx, payment_id=p2.id)
        assert p2.unallocated == D(40)
        assert invoice_get(ctx, invoice_id=b.id).status == "paid"
        with pytest.raises(ValidationError):
            payment_record(
                ctx,
                account_id=acc,
                amount=D("1.001"),
                method="cash",
                reference="x",
                received_on=today,
            )
    bal = balance(env, acc)
    assert (bal.balance, bal.credit, bal.available_credit) == (D(-40), D(40), D(40))
    # the next invoice is settled from the credit at issue
    d = invoice(env, acc, line(price="25.00"))
    assert d.status == "paid" and d.paid == D(25)
    with service_ctx(env) as ctx:
        st = statement_get(ctx, account_id=acc, date_from=today, date_to=today)
        assert st.opening_balance == 0 and st.closing_balance == D(-15)
        assert [x.kind for x in st.lines] == ["invoice"] * 3 + ["payment"] * 2 + ["invoice"]
        assert st.lines[-1].balance == D(-15)
        assert payment_list(ctx, account_id=acc).total == 2


def test_credit_notes_partial_full_and_paid(env):
    vat(env)
    acc = customer(env)
    inv = invoice(env, acc, line("A", "100.00"), line("B", "10.00"))
    with service_ctx(env) as ctx:
        cn = credit_note_create(
            ctx,
            invoice_id=inv.id,
            reason="goodwill",
            lines=[CreditNoteLineInput(inv.lines[0].id, D("59.50"))],
        )
        assert cn.number == f"CN-{YEAR}-000001"
        assert (cn.net, cn.tax, cn.total, cn.to_credit_balance) == (D(50), D("9.50"), D("59.50"), 0)
        with pytest.raises(ValidationError):
            credit_note_create(
                ctx,
                invoice_id=inv.id,
                reason="x",
                lines=[CreditNoteLineInput(inv.lines[0].id, D("60.00"))],
            )
        payment_record(
            ctx,
            account_id=acc,
            amount=D("71.40"),
            method="cash",
            reference="r",
            received_on=datetime.now(UTC).date(),
        )
        assert invoice_get(ctx, invoice_id=inv.id).status == "paid"
        full = credit_note_create(ctx, invoice_id=inv.id, reason="cancelled")
        assert full.total == D("71.40") and full.to_credit_balance == D("71.40")
        got = invoice_get(ctx, invoice_id=inv.id)
        assert (got.credited, got.paid, got.outstanding) == (D("130.90"), 0, 0)
        assert sum(ln.credited for ln in got.lines) == got.total
        with pytest.raises(InvalidState):
            credit_note_create(ctx, invoice_id=inv.id, reason="again")
        assert credit_note_list(ctx, invoice_id=inv.id).total == 2
        assert credit_note_get(ctx, credit_note_id=cn.id).lines[0].description == "A"
    assert balance(env, acc).balance == D("-71.40")


def test_void(env):
    acc = customer(env, country=None)
    draft = invoice(env, acc, issue=False)
    issued = invoice(env, acc)
    paid = invoice(env, acc)
    with service_ctx(env) as ctx:
        assert invoice_void(ctx, invoice_id=draft.id, reason="typo").status == "void"
        assert invoice_void(ctx, invoice_id=issued.id, reason="wrong").status == "void"
        with pytest.raises(InvalidState):
            invoice_void(ctx, invoice_id=issued.id, reason="again")
        payment_record(
            ctx,
            account_id=acc,
            amount=D(1),
            method="cash",
            reference="r",
            received_on=datetime.now(UTC).date(),
            invoice_ids=[paid.id],
        )
        with pytest.raises(InvalidState):
            invoice_void(ctx, invoice_id=paid.id, reason="no")
    assert balance(env, acc).balance == D(99)


def test_credit_limit(env):
    acc = customer(env, country=None, credit_limit="150.00")
    invoice(env, acc, line(price="100.00"), check_credit_limit=True)
    with service_ctx(env) as ctx:
        with pytest.raises(CreditLimitExceeded) as e:
            check_credit(ctx, acc, D("40.00"), pending=D("20.00"))
        assert "100.00" in e.value.message and "150.00" in e.value.message
        check_credit(ctx, acc, D("50.00"))
    with pytest.raises(CreditLimitExceeded):
        invoice(env, acc, line(price="60.00"), check_credit_limit=True)
    # refused: nothing written, no number used
    assert invoice(env, acc, line(price="60.00")).number.endswith("000002")
    b = balance(env, acc)
    assert (b.balance, b.available_credit) == (D(160), D(-10))


def test_adjustments_and_statement_over_days(env):
    acc = customer(env, country=None)
    env.clock.freeze(datetime(2026, 3, 1, 12, tzinfo=UTC))
    invoice(env, acc, line(price="10.00"))
    env.clock.freeze(datetime(2026, 3, 5, 12, tzinfo=UTC))
    with service_ctx(env) as ctx:
        adj = balance_adjust(ctx, account_id=acc, amount=D("-2.50"), reason="goodwill")
        assert adj.balance == D("7.50")
        balance_adjust(ctx, account_id=acc, amount=D("1.00"), reason="fee")
        with pytest.raises(ValidationError):
            balance_adjust(ctx, account_id=acc, amount=D(0), reason="none")
        log = audit.audit_log_list(ctx, target_type="balance")
        assert log.total == 2
    env.clock.freeze(datetime(2026, 3, 10, 12, tzinfo=UTC))
    with service_ctx(env) as ctx:
        st = statement_get(
            ctx, account_id=acc, date_from=date(2026, 3, 2), date_to=date(2026, 3, 31)
        )
        assert (st.opening_balance, st.closing_balance) == (D(10), D("8.50"))
        assert [(x.kind, x.amount, x.balance) for x in st.lines] == [
            ("adjustment", D("-2.50"), D("7.50")),
            ("adjustment", D("1.00"), D("8.50")),
        ]
        b = account_balance_get(ctx, account_id=acc)
        assert b.overdue == D(10) and b.balance == D("8.50")
        assert invoice_list(ctx, account_id=acc, status="overdue").total == 1
        assert invoice_list(ctx, account_id=acc, status="issued").total == 0
        assert invoice_list(ctx, date_from=date(2026, 3, 2)).total == 0


def test_invoice_cursor_never_misses_or_repeats(env):
    a, b = customer(env, "A", country=None), customer(env, "B", country=None)
    drafts = [invoice(env, a, issue=False) for _ in range(3)]
    seen: list[int] = []
    cursor = 0
    for step in range(4):
        invoice(env, b if step % 2 else a)
        with service_ctx(env) as ctx:
            if step < 3:
                invoice_issue(ctx, invoice_id=drafts[step].id)
            page = invoice_list(ctx, issued_after=cursor, limit=1)
            while page.items:
                seen += [i.id for i in page.items]
                cursor = page.next_cursor
                page = invoice_list(ctx, issued_after=cursor, limit=1)
    with service_ctx(env) as ctx:
        every = invoice_list(ctx, status=None, limit=100)
    assert sorted(seen) == sorted(i.id for i in every.items) and len(seen) == len(set(seen)) == 7


def test_subtree_scope(env):
    reseller = customer(env, "Res", type="reseller", partner_level="advanced", country=None)
    with service_ctx(env) as ctx:
        users.user_create(
            ctx,
            account_id=reseller,
            login="res",
            password="a-long-password-1",
            full_name="R",
            roles=["admin"],
        )
    mine = customer(env, "Mine", login="res", country=None)
    other = customer(env, "Other", country=None)
    theirs = invoice(env, other)
    with service_ctx(env, "res") as ctx:
        own = invoice_create(ctx, account_id=mine, lines=[line()], issue=True)
        assert own.issuer_id == reseller and own.number == f"INV-{YEAR}-000001"
        with pytest.raises(NotFound):
            invoice_get(ctx, invoice_id=theirs.id)
        with pytest.raises(NotFound):
            invoice_create(ctx, account_id=other, lines=[line()])
        with pytest.raises(Forbidden):
            invoice_create(ctx, account_id=reseller, lines=[line()])
        assert [i.id for i in invoice_list(ctx).items] == [own.id]
    # the provider's sequence is its own
    assert theirs.number == f"INV-{YEAR}-000001"


def test_fault_midway_leaves_nothing(env, monkeypatch):
    acc = customer(env, country=None)

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(audit, "record", boom)
    with pytest.raises(RuntimeError):
        invoice(env, acc)
    with pytest.raises(RuntimeError), service_ctx(env) as ctx:
        balance_adjust(ctx, account_id=acc, amount=D(5), reason="x")
    monkeypatch.undo()
    with UnitOfWork(env.app.engine) as uow:
        assert uow.session.scalar(select(func.count()).select_from(Invoice)) == 0
        assert uow.session.scalar(select(func.count()).select_from(LedgerTransaction)) == 0
    assert invoice(env, acc).number == f"INV-{YEAR}-000001"


def test_render_html_and_pdf(env):
    vat(env, reverse_charge=True)
    acc = customer(env, "Müller <GmbH>", tax_id="DE1")
    inv = invoice(env, acc, line("Hosting (annual)", "120.00"))
    with service_ctx(env) as ctx:
        h = invoice_render(ctx, invoice_id=inv.id, format="html")
        p = invoice_render(ctx, invoice_id=inv.id, format="pdf")
    assert h.content.startswith("<!DOCTYPE html>") and inv.number in h.content
    assert "Müller &lt;GmbH&gt;" in h.content and "Reverse charge" in h.content
    assert "Provider" in h.content and h.filename == f"{inv.number}.html"
    raw = base64.b64decode(p.content)
    assert raw.startswith(b"%PDF-1.4") and raw.rstrip().endswith(b"%%EOF")
    assert b"Hosting \\(annual\\)" in raw and inv.number.encode() in raw
    xref = int(raw.rsplit(b"startxref\n", 1)[1].split()[0])
    assert raw[xref:].startswith(b"xref")


def test_concurrent_issuing_is_gapless(env):
    acc = customer(env, country=None)
    drafts = [invoice(env, acc, issue=False).id for _ in range(24)]
    errors: list[BaseException] = []

    def work(ids: list[int]) -> None:
        try:
            for i in ids:
                with service_ctx(env) as ctx:
                    invoice_issue(ctx, invoice_id=i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(drafts[k::8],)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with UnitOfWork(env.app.engine) as uow:
        seqs = sorted(uow.session.scalars(select(Invoice.seq)))
        feed = sorted(uow.session.scalars(select(Invoice.feed_position)))
    assert seqs == list(range(1, 25)) and feed == list(range(1, 25))


def _counts(env) -> dict[str, object]:
    from pba_server.billing import models as m

    with UnitOfWork(env.app.engine) as uow:
        s = uow.session
        out: dict[str, object] = {
            t.__tablename__: s.scalar(select(func.count()).select_from(t))
            for t in (
                m.LedgerTransaction,
                m.LedgerEntry,
                m.Invoice,
                m.InvoiceLine,
                m.CreditNote,
                m.CreditNoteLine,
                m.Payment,
                m.PaymentAllocation,
            )
        }
        out["balances"] = sorted(
            (r.account_id, r.receivable, r.credit) for r in s.scalars(select(m.AccountBalance))
        )
        out["sequences"] = sorted(
            (r.issuer_id, r.kind, r.last_number) for r in s.scalars(select(m.NumberSequence))
        )
        out["invoices"] = sorted(
            (i.id, i.status, i.paid_amount, i.credited_amount) for i in s.scalars(select(Invoice))
        )
    return out


@pytest.mark.parametrize(
    "what",
    ["issue", "create_and_issue", "pay", "allocate", "credit", "void", "adjust"],
)
def test_a_fault_in_the_middle_of_any_operation_leaves_nothing(env, monkeypatch, what):
    vat(env)
    acc = customer(env)
    draft = invoice(env, acc, issue=False)
    issued = invoice(env, acc)
    today = datetime.now(UTC).date()
    with service_ctx(env) as ctx:
        pay = payment_record(
            ctx,
            account_id=acc,
            amount=D(500),
            method="cash",
            reference="r",
            received_on=today,
            allocate=False,
        )
    before = _counts(env)
    real = ledger.post

    def post_then_fail(*a, **k):
        real(*a, **k)  # the entries are written, then the operation fails
        raise RuntimeError("crash after writing entries")

    monkeypatch.setattr(ledger, "post", post_then_fail)
    calls = {
        "issue": lambda c: invoice_issue(c, invoice_id=draft.id),
        "create_and_issue": lambda c: invoice_create(c, account_id=acc, lines=[line()], issue=True),
        "pay": lambda c: payment_record(
            c, account_id=acc, amount=D(5), method="cash", reference="x", received_on=today
        ),
        "allocate": lambda c: payment_allocate(c, payment_id=pay.id),
        "credit": lambda c: credit_note_create(c, invoice_id=issued.id, reason="r"),
        "void": lambda c: invoice_void(c, invoice_id=issued.id, reason="r"),
        "adjust": lambda c: balance_adjust(c, account_id=acc, amount=D(5), reason="r"),
    }
    with pytest.raises(RuntimeError), service_ctx(env) as ctx:
        calls[what](ctx)
    monkeypatch.undo()
    assert _counts(env) == before


def test_concurrent_mixed_money_operations_on_one_account(env):
    """8 threads invoice, pay and credit the same customer at once: no deadlock,
    no lost update, numbers gapless, books sound (checked after the test)."""
    acc = customer(env, country=None)
    today = datetime.now(UTC).date()
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for n in range(3):
                with service_ctx(env) as ctx:
                    inv = invoice_create(
                        ctx, account_id=acc, lines=[line(price=f"{10 + k}.00")], issue=True
                    )
                with service_ctx(env) as ctx:
                    payment_record(
                        ctx,
                        account_id=acc,
                        amount=D(7),
                        method="cash",
                        reference=f"t{k}-{n}",
                        received_on=today,
                    )
                with service_ctx(env) as ctx:
                    credit_note_create(
                        ctx,
                        invoice_id=inv.id,
                        reason="r",
                        lines=[CreditNoteLineInput(inv.lines[0].id, D(1))],
                    )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with UnitOfWork(env.app.engine) as uow:
        assert sorted(uow.session.scalars(select(Invoice.seq))) == list(range(1, 25))
    # 8 threads x 3 x (10+k) - 24 x 7 paid - 24 x 1 credited
    expected = sum(3 * (10 + k) for k in range(8)) - 24 * 7 - 24
    assert balance(env, acc).balance == D(expected)


def test_an_enterprise_does_not_bill_its_departments(env):
    ent = customer(env, "Ent", type="enterprise", country=None)
    with service_ctx(env) as ctx:
        users.user_create(
            ctx,
            account_id=ent,
            login="ent",
            password="a-long-password-1",
            full_name="E",
            roles=["admin"],
        )
    dept = customer(env, "Dept", login="ent", type="department", country=None)
    draft = invoice(env, dept, issue=False)
    assert draft.issuer_id != ent  # the enterprise's seller bills the department
    with service_ctx(env, "ent") as ctx:
        with pytest.raises(Forbidden):
            invoice_create(ctx, account_id=dept, lines=[line()])
        with pytest.raises(Forbidden):
            invoice_issue(ctx, invoice_id=draft.id)
        with pytest.raises(Forbidden):
            balance_adjust(ctx, account_id=dept, amount=D(-5), reason="r")
        assert invoice_get(ctx, invoice_id=draft.id).id == draft.id  # may read it


def _plan_quote(env, acc: int, name: str, *, inclusive: bool, setup: str, recurring: str):
    with service_ctx(env) as ctx:
        t = service_template_create(ctx, name=f"T {name}", service_type="other", module="plesk")
        p = plan_create(
            ctx,
            template_id=t.id,
            name=name,
            periods=[PlanPeriod(1, "month", D(setup), D(recurring))],
            tax_inclusive=inclusive,
        )
        plan_publish(ctx, plan_id=p.id)
        return price_quote(ctx, plan_id=p.id, account_id=acc)


def test_plan_lines_carry_the_plans_tax_inclusive(env):
    vat(env)  # 19 %
    acc = customer(env)
    gross = _plan_quote(env, acc, "Gross", inclusive=True, setup="11.90", recurring="119.00")
    net = _plan_quote(env, acc, "Net", inclusive=False, setup="0", recurring="100.00")
    assert (gross.tax_inclusive, net.tax_inclusive) == (True, False)
    lines = plan_lines(gross, link_id="sub-1") + plan_lines(
        net, period_start=date(2026, 1, 1), period_end=date(2026, 1, 31)
    )
    assert [(ln.description, ln.tax_inclusive) for ln in lines] == [
        ("Setup fee", True),
        ("Subscription, 1 month", True),
        ("Subscription, 1 month", False),  # the zero setup fee is left out
    ]
    assert {ln.link_type for ln in lines} == {"subscription"}
    inv = invoice(env, acc, *lines)
    assert [(ln.net, ln.tax, ln.total, ln.tax_inclusive) for ln in inv.lines] == [
        (D("10.00"), D("1.90"), D("11.90"), True),  # the tax is taken out of the price
        (D("100.00"), D("19.00"), D("119.00"), True),
        (D("100.00"), D("19.00"), D("119.00"), False),  # the tax is added to it
    ]
    assert inv.lines[2].period_start == date(2026, 1, 1) and inv.lines[0].link_id == "sub-1"
    assert (inv.subtotal, inv.tax_total, inv.total) == (D("210.00"), D("39.90"), D("249.90"))


def test_plan_lines_spread_the_discount_and_keep_the_quote_total():
    quote = PriceQuoteInfo(
        account_id=1,
        plan_id=1,
        plan_version=1,
        currency="USD",
        period_count=1,
        period_unit="day",
        price_source="plan",
        lines=[
            QuoteLine("setup", "Setup fee", D(1), D("3.00"), D("3.00")),
            QuoteLine("recurring", "Subscription, 1 day", D(1), D("1.00"), D("1.00")),
            QuoteLine("resource_recurring", "Disk: 3 extra", D(3), D("0.0166"), D("0.05"), 7),
            QuoteLine("discount", "Discount", D(1), D("-3.50"), D("-3.50")),
        ],
        subtotal=D("4.05"),
        discount=D("-3.50"),
        total=D("0.55"),
        tax_inclusive=True,
    )
    lines = plan_lines(quote)
    assert [(ln.quantity, ln.unit_price, ln.discount) for ln in lines] == [
        (D(1), D("3.00"), D("3.00")),
        (D(1), D("1.00"), D("0.50")),
        (D(1), D("0.05"), D(0)),  # a unit price finer than a cent: one unit at the amount
    ]
    assert sum(ln.quantity * ln.unit_price - ln.discount for ln in lines) == quote.total
    assert all(ln.tax_inclusive for ln in lines)
