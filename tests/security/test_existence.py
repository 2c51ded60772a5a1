"""Nothing outside the caller's subtree is revealed: not the owner of a
foreign object, not the domains or orders of another seller under a TLD of
the same name."""

from __future__ import annotations

import itertools
import xmlrpc.client
from decimal import Decimal
from typing import Any

import pytest

from pba_server.accounts import tree, users
from pba_server.core.db import UnitOfWork
from pba_server.domains import tlds
from pba_server.domains.models import Domain
from pba_server.payments.plugins import plugin_configure
from pba_server.payments.types import SettingValue
from tests.catalog_support import service_ctx
from tests.domains_support import PRICES

PW = "a-long-password-1"
_registries = itertools.count(1)


def _fault(call: Any, *args: Any) -> xmlrpc.client.Fault:
    with pytest.raises(xmlrpc.client.Fault) as e:
        call(*args)
    return e.value


def _seller(env: Any, name: str) -> dict[str, Any]:
    """An advanced reseller with an admin, its own registrar selling .shop,
    and a customer on account."""
    low = name.lower()
    with service_ctx(env) as ctx:
        res = tree.account_create(
            ctx, type="reseller", name=name, partner_level="advanced", country="DE"
        ).id
        users.user_create(
            ctx,
            account_id=res,
            login=f"{low}-admin",
            password=PW,
            full_name=name,
            roles=["admin"],
        )
    with service_ctx(env, f"{low}-admin") as ctx:
        inst = plugin_configure(
            ctx,
            plugin="sandbox_registrar",
            name="registrar",
            settings=[SettingValue("registry", f"reg-{low}-{next(_registries)}")],
        ).id
        tld = tlds.tld_create(ctx, name="shop", instance_id=inst, prices=list(PRICES))
        cust = tree.account_create(
            ctx,
            type="customer_business",
            name=f"{name} customer",
            country="DE",
            credit_limit=Decimal("1000"),
        ).id
    return {"reseller": res, "tld": tld, "customer": cust, "login": f"{low}-admin"}


def _order(proxy: Any, seller: dict[str, Any], domain: str) -> Any:
    return proxy.OrderPlace(
        {
            "account_id": seller["customer"],
            "lines": [
                {
                    "plan_id": seller["tld"].plan_id,
                    "period_count": 1,
                    "period_unit": "year",
                    "parameters": [{"name": "domain", "value": domain}],
                }
            ],
            "on_account": True,
        }
    )


def test_tax_rule_remove_of_a_foreign_rule_says_tax_rule_not_found(api):
    admin = api.xmlrpc()
    ids = []
    for name in ("A", "B"):
        res = admin.AccountCreate(
            {"type": "reseller", "name": name, "partner_level": "advanced", "country": "DE"}
        )["id"]
        admin.UserCreate(
            {
                "account_id": res,
                "login": f"{name.lower()}-billing",
                "password": PW,
                "full_name": name,
                "roles": ["billing"],
            }
        )
        ids.append(res)
    a, b = api.xmlrpc("a-billing", PW), api.xmlrpc("b-billing", PW)
    rule = a.TaxRuleSet({"buyer_country": "DE", "name": "VAT", "rate": "19"})
    f = _fault(b.TaxRuleRemove, {"tax_rule_id": rule["id"]})
    assert f.faultCode == 4040
    assert f.faultString == f"Client.NotFound: tax rule {rule['id']} not found"
    assert str(ids[0]) not in f.faultString.replace(str(rule["id"]), "")
    # the same answer as for a rule that does not exist at all
    g = _fault(b.TaxRuleRemove, {"tax_rule_id": 999_999})
    assert g.faultString == "Client.NotFound: tax rule 999999 not found"
    assert [r["id"] for r in a.TaxRuleList({})["items"]] == [rule["id"]]


def test_a_tld_of_the_same_name_reveals_no_other_sellers_domains_or_orders(env, api):
    sa, sb = _seller(env, "Alpha"), _seller(env, "Beta")
    assert sa["tld"].name == sb["tld"].name == "shop"
    a, b = api.xmlrpc(sa["login"], PW), api.xmlrpc(sb["login"], PW)
    pending = _order(a, sa, "secret.shop")
    with UnitOfWork(env.app.engine) as uow:  # a live domain of Alpha's customer
        now = env.clock.now()
        uow.session.add(
            Domain(
                name="held.shop",
                live_name="held.shop",
                account_id=sa["customer"],
                tld_id=sa["tld"].id,
                instance_id=sa["tld"].instance_id,
                status="active",
                action="register",
                nameservers="[]",
                contacts="{}",
                created_at=now,
                updated_at=now,
            )
        )
        uow.commit()
    for name in ("secret.shop", "held.shop"):
        f = _fault(_order, b, sb, name)
        assert f.faultCode == 4001
        assert f.faultString.endswith(f"{name} is not available"), f.faultString
        assert str(pending["id"]) not in f.faultString and "here" not in f.faultString
    # Beta's reads do not show them either
    assert b.DomainList({})["total"] == 0
    assert _fault(b.OrderGet, {"order_id": pending["id"]}).faultCode == 4040
    assert [t["id"] for t in b.TldList({})["items"]] == [sb["tld"].id]
    # Alpha, whose they are, is told exactly what is going on
    f = _fault(_order, a, sa, "secret.shop")
    assert f"being ordered already (order {pending['id']})" in f.faultString
    assert "held.shop is already registered here" in _fault(_order, a, sa, "held.shop").faultString
