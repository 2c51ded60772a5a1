"""Payments odds and ends: reconciliation records each row on its own (one
bad row does not undo the others), and plugins installed as packages are
found through the ``pba_server.plugins`` entry-point group."""

from __future__ import annotations

import sys
import textwrap
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pba_server.billing import payments as billing_payments
from pba_server.billing.balances import account_balance_get
from pba_server.billing.invoices import invoice_create, invoice_get
from pba_server.core.db import UnitOfWork
from pba_server.payments.charges import payment_charge, payment_charge_get
from pba_server.payments.reconcile import reconcile
from pba_server.sdk import loader
from tests.billing_support import assert_books_sound, customer
from tests.catalog_support import service_ctx
from tests.test_autopay import card, gateway


def test_reconcile_one_bad_row_does_not_abort_the_others(env, tmp_path, monkeypatch):
    inst = gateway(env, tmp_path / "s.json")
    acc = customer(env, "Payer")
    m = card(env, acc, inst, "tok_timeout")
    ids = []
    for amount in ("5.00", "6.00", "7.00"):
        with service_ctx(env) as ctx:
            c = payment_charge(
                ctx, payment_method_id=m, amount=Decimal(amount), idempotency_key=amount
            )
            assert c.status == "pending"
            ids.append(c.id)
    real = billing_payments.payment_record

    def broken(ctx: Any, **kw: Any) -> Any:
        if kw["amount"] == Decimal("6.00"):
            raise RuntimeError("the books are down for this one")
        return real(ctx, **kw)

    with monkeypatch.context() as mp:
        mp.setattr(billing_payments, "payment_record", broken)
        with UnitOfWork(env.app.engine) as uow:
            assert reconcile(uow, env.app.runtime, older_than=timedelta(0)) == (
                "2 captured, 1 failed"
            )
            uow.commit()
    with service_ctx(env) as ctx:
        got = [payment_charge_get(ctx, charge_id=i).status for i in ids]
    assert got == ["captured", "pending", "captured"]
    with UnitOfWork(env.app.engine) as uow:  # the next run records the one left
        assert reconcile(uow, env.app.runtime, older_than=timedelta(0)) == "1 captured"
        uow.commit()
    with service_ctx(env) as ctx:
        assert account_balance_get(ctx, account_id=acc).balance == Decimal("-18.00")
    assert_books_sound(env)


GOOD = """
from decimal import Decimal
from pba_server.sdk import SDK_VERSION, ChargeResult, LookupResult, PaymentGateway, PluginInfo

class Shipped(PaymentGateway):
    info = PluginInfo(name="shipped_gw", version="2.1.0", sdk_version=SDK_VERSION)

    def charge(self, *, key, amount, currency, token, description):
        return ChargeResult("ch_" + key, amount, currency)

    def lookup(self, *, key):
        return LookupResult(status="not_found")

PLUGIN = Shipped
"""


def _dist(site: Path, name: str, entry_points: str) -> None:
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


def test_entry_point_discovery(tmp_path, monkeypatch):
    """A plugin installed as a package (a dist-info with an entry point in
    the pba_server.plugins group) is loaded; a broken entry point is listed
    as broken with the reason and nothing else is disturbed."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "shipped_gw_pkg.py").write_text(GOOD)
    (site / "broken_gw_pkg.py").write_text("import no_such_module_anywhere\n")
    _dist(site, "shipped-gw", "[pba_server.plugins]\nshipped_gw = shipped_gw_pkg\n")
    _dist(
        site,
        "broken-gw",
        "[pba_server.plugins]\nbroken_gw = broken_gw_pkg:PLUGIN\nnot_a_plugin = json\n",
    )
    monkeypatch.syspath_prepend(str(site))
    empty = tmp_path / "plugins"
    empty.mkdir()
    try:
        found = {p.name: p for p in loader.discover(empty, entry_points=True)}
    finally:
        for mod in ("shipped_gw_pkg", "broken_gw_pkg"):
            sys.modules.pop(mod, None)
    ok = found["shipped_gw"]
    assert ok.status == "ok" and ok.source.startswith("entry point shipped_gw")
    assert ok.info is not None and ok.info.version == "2.1.0"
    assert ok.cls(settings={}).charge(
        key="k", amount=Decimal("1.00"), currency="EUR", token="t", description=""
    ).reference == ("ch_k")
    broken = found["broken_gw"]
    assert broken.status == "broken" and "No module named 'no_such_module_anywhere'" in (
        broken.reason
    )
    assert found["not_a_plugin"].status == "broken"
    assert "not a PluginInfo" in found["not_a_plugin"].reason
    # without entry points only the folder counts
    assert "shipped_gw" not in {p.name for p in loader.discover(empty, entry_points=False)}


@pytest.mark.parametrize("group", ["pba_server.plugins"])
def test_entry_point_group_name_is_documented(group):
    assert group == loader.ENTRY_POINT_GROUP
    assert group in Path("docs/plugins.md").read_text()


def test_a_pending_charge_of_an_invoice_holds_back_another(env, tmp_path):
    """Two charges of one invoice never both take the full amount: what is
    pending counts against the outstanding amount until it settles."""
    from pba_server.billing.types import InvoiceLineInput
    from pba_server.core.errors import InvalidState, ValidationError

    inst = gateway(env, tmp_path / "s.json")
    acc = customer(env, "Payer")
    slow = card(env, acc, inst, "tok_timeout")
    ok = card(env, acc, inst, "tok_approve", default=False)
    with service_ctx(env) as ctx:
        inv = invoice_create(
            ctx, account_id=acc, lines=[InvoiceLineInput("Hosting", Decimal("20"))], issue=True
        ).id
    with service_ctx(env) as ctx:
        part = payment_charge(
            ctx, payment_method_id=slow, invoice_id=inv, amount=Decimal("5"), idempotency_key="p"
        )
    assert part.status == "pending"
    with (
        service_ctx(env) as ctx,
        pytest.raises(ValidationError, match=r"15\.00 outstanding and not being charged"),
    ):
        payment_charge(
            ctx, payment_method_id=ok, invoice_id=inv, idempotency_key="x", amount=Decimal("20")
        )
    with service_ctx(env) as ctx:
        rest = payment_charge(ctx, payment_method_id=ok, invoice_id=inv, idempotency_key="r")
    assert rest.status == "captured" and rest.amount == Decimal("15.00")
    with service_ctx(env) as ctx, pytest.raises(InvalidState):
        payment_charge(ctx, payment_method_id=ok, invoice_id=inv, idempotency_key="y")
    with UnitOfWork(env.app.engine) as uow:
        assert reconcile(uow, env.app.runtime, older_than=timedelta(0)) == "1 captured"
        uow.commit()
    with service_ctx(env) as ctx:
        assert invoice_get(ctx, invoice_id=inv).status == "paid"
    assert_books_sound(env)
