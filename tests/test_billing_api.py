"""Billing through the real SOAP and XML-RPC endpoints (each test on both
protocols and both databases); the books are checked after each test."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from tests.billing_support import assert_books_sound
from tests.catalog_support import Caller, D
from tests.support import page_items

PROTOCOLS = ["soap", "xmlrpc"]
YEAR = datetime.now(UTC).year


@pytest.fixture(params=PROTOCOLS)
def call(request: pytest.FixtureRequest, api: Any, env: Any) -> Any:
    yield Caller(api, request.param)
    assert_books_sound(env)


def _customer(call: Caller, name: str = "Acme", **kw: Any) -> int:
    return int(
        call(
            "AccountCreate",
            type="customer_business",
            name=name,
            country="DE",
            **{"credit_limit": Decimal("500.00"), **kw},
        )["id"]
    )


def test_invoice_lifecycle_payments_and_statement(call):
    today = datetime.now(UTC).date().isoformat()
    rule = call("TaxRuleSet", buyer_country="de", name="VAT", rate=Decimal("19"))
    assert rule["buyer_country"] == "DE" and D(rule["rate"]) == 19
    assert [r["name"] for r in page_items(call("TaxRuleList"))] == ["VAT"]
    acc = _customer(call)
    assert call("PaymentTermsSet", account_id=acc, net_days=30)["net_days"] == 30
    fmt = call("DocumentNumberFormatSet", kind="credit_note", format="CR{seq:05d}")
    assert fmt["last_number"] == 0

    draft = call(
        "InvoiceCreate",
        account_id=acc,
        lines=[{"description": "Setup fee", "unit_price": Decimal("20.00")}],
        idempotency_key="inv-1",
    )
    assert draft["status"] == "draft" and draft.get("number") is None
    again = call(
        "InvoiceCreate",
        account_id=acc,
        lines=[{"description": "Setup fee", "unit_price": Decimal("20.00")}],
        idempotency_key="inv-1",
    )
    assert again["id"] == draft["id"]
    inv = call(
        "InvoiceAddLine",
        invoice_id=draft["id"],
        line={
            "description": "Traffic over the included 100 GB",
            "unit_price": Decimal("0.50"),
            "quantity": Decimal("30"),
            "link_type": "usage",
            "link_id": "sub-7",
            "period_start": "2026-01-01",
            "period_end": "2026-01-31",
        },
    )
    assert [ln["link_type"] for ln in inv["lines"]] == ["one_off", "usage"]
    assert str(inv["lines"][1]["quantity"]) == "30"  # not 3E+1
    inv = call("InvoiceIssue", invoice_id=draft["id"])
    assert inv["number"] == f"INV-{YEAR}-000001" and inv["status"] == "issued"
    assert (D(inv["subtotal"]), D(inv["tax_total"]), D(inv["total"])) == (
        D("35.00"),
        D("6.65"),
        D("41.65"),
    )
    assert str(inv["due_date"])[:10] > today

    second = call(
        "InvoiceCreate",
        account_id=acc,
        lines=[{"description": "Licence", "unit_price": Decimal("10.00")}],
        issue=True,
    )
    assert second["number"] == f"INV-{YEAR}-000002"

    pay = call(
        "PaymentRecord",
        account_id=acc,
        amount=Decimal("53.55"),
        method="bank_transfer",
        reference="SEPA-42",
        received_on=today,
        invoice_ids=[second["id"]],
        allocate=True,
        idempotency_key="pay-1",
    )
    assert [(a["invoice_id"], D(a["amount"])) for a in pay["allocations"]] == [
        (second["id"], D("11.90"))
    ]
    pay = call("PaymentAllocate", payment_id=pay["id"])
    assert D(pay["unallocated"]) == D("0.00")
    assert call("InvoiceGet", invoice_id=inv["id"])["status"] == "paid"
    assert call("PaymentList", account_id=acc)["total"] == 1

    cn = call(
        "CreditNoteCreate",
        invoice_id=second["id"],
        reason="licence not used",
        idempotency_key="cn-1",
    )
    assert cn["number"] == "CR00001" and D(cn["to_credit_balance"]) == D("11.90")
    assert call("CreditNoteGet", credit_note_id=cn["id"])["lines"][0]["description"] == "Licence"
    assert call("CreditNoteList", account_id=acc)["total"] == 1

    adj = call("BalanceAdjust", account_id=acc, amount=Decimal("5.00"), reason="late fee")
    assert D(adj["balance"]) == D("-6.90")
    bal = call("AccountBalanceGet", account_id=acc)
    assert (D(bal["balance"]), D(bal["credit"]), D(bal["available_credit"])) == (
        D("-6.90"),
        D("6.90"),
        D("506.90"),
    )
    st = call("StatementGet", account_id=acc, date_from=today, date_to=today)
    assert [line["kind"] for line in st["lines"]] == [
        "invoice",
        "invoice",
        "payment",
        "credit_note",
        "adjustment",
    ]
    assert D(st["closing_balance"]) == D(bal["balance"])

    page = call("InvoiceList", issued_after=0, limit=1)
    assert [i["id"] for i in page["items"]] == [inv["id"]]
    page = call("InvoiceList", issued_after=page["next_cursor"], limit=10)
    assert [i["id"] for i in page["items"]] == [second["id"]]
    assert call("InvoiceList", issued_after=page["next_cursor"])["items"] in ([], None)
    assert call("InvoiceList", account_id=acc, status="paid")["total"] == 2

    html = call("InvoiceRender", invoice_id=inv["id"], format="html")
    assert inv["number"] in html["content"] and "19%" in html["content"]
    pdf = call("InvoiceRender", invoice_id=inv["id"], format="pdf")
    assert base64.b64decode(pdf["content"]).startswith(b"%PDF-")

    void = call("InvoiceCreate", account_id=acc, lines=[{"description": "x", "unit_price": 1}])
    assert call("InvoiceVoid", invoice_id=void["id"], reason="mistake")["status"] == "void"
    assert call("TaxRuleRemove", tax_rule_id=rule["id"]) is True
    assert page_items(call("TaxRuleList")) == []


def test_faults(call):
    acc = _customer(call, "Small", credit_limit=Decimal("0"))
    code, msg = call.fault(
        "InvoiceCreate",
        account_id=acc,
        lines=[{"description": "On account", "unit_price": Decimal("10.00")}],
        issue=True,
        check_credit_limit=True,
    )
    assert code == "Client.CreditLimitExceeded" and "10.00" in msg and "0.00" in msg
    code, _ = call.fault(
        "InvoiceCreate",
        account_id=acc,
        lines=[{"description": "x", "unit_price": Decimal("1.001")}],
    )
    assert code == "Client.Validation"
    inv = call(
        "InvoiceCreate", account_id=acc, lines=[{"description": "x", "unit_price": 5}], issue=True
    )
    assert inv["number"] == f"INV-{YEAR}-000001"  # the refused one used no number
    code, _ = call.fault(
        "InvoiceAddLine", invoice_id=inv["id"], line={"description": "y", "unit_price": 1}
    )
    assert code == "Client.InvalidState"
    code, _ = call.fault(
        "InvoiceCreate",
        account_id=acc,
        lines=[
            {"description": "x", "unit_price": Decimal("99999999999"), "quantity": Decimal("99999")}
        ],
    )
    assert code == "Client.Validation"  # too large: refused, not a database error
    code, _ = call.fault(
        "PaymentRecord",
        account_id=acc,
        amount=Decimal("5.00"),
        method="cash",
        reference="r",
        received_on=datetime.now(UTC).date().isoformat(),
        invoice_ids=[inv["id"]],
        allocate=False,
    )
    assert code == "Client.Validation"
    code, _ = call.fault("InvoiceGet", invoice_id=999999)
    assert code == "Client.NotFound"
    code, _ = call.fault(
        "DocumentNumberFormatSet", kind="invoice", format="{seq.__class__.__name__}"
    )
    assert code == "Client.Validation"


def test_a_reseller_sees_only_its_own_books(call, api):
    res = call("AccountCreate", type="reseller", name="Res", partner_level="advanced", country="DE")
    call(
        "UserCreate",
        account_id=res["id"],
        login="res-billing",
        password="reseller-password-1",
        full_name="R",
        roles=["billing"],
    )
    other = _customer(call, "Provider's own")
    theirs = call(
        "InvoiceCreate", account_id=other, lines=[{"description": "x", "unit_price": 5}], issue=True
    )
    rc = Caller(api, call.protocol, "res-billing", "reseller-password-1")
    mine = int(
        call("AccountCreate", type="customer_personal", name="Rc", parent_id=res["id"])["id"]
    )
    own = rc(
        "InvoiceCreate", account_id=mine, lines=[{"description": "x", "unit_price": 7}], issue=True
    )
    assert own["issuer_id"] == res["id"] and own["number"] == f"INV-{YEAR}-000001"
    assert rc.fault("InvoiceGet", invoice_id=theirs["id"])[0] == "Client.NotFound"
    assert rc.fault("AccountBalanceGet", account_id=other)[0] == "Client.NotFound"
    assert [i["id"] for i in rc("InvoiceList")["items"]] == [own["id"]]
    # the reseller's own balance with its parent is untouched by its customers' debts
    assert D(rc("AccountBalanceGet")["balance"]) == 0
