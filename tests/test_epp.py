"""The ``epp`` registrar plugin against a loopback EPP server over TLS with a
self-signed certificate made by the test (tests/epp_server.py)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from pba_server.sdk import ConfigurationError, loader
from pba_server.sdk.registrar import (
    AuthorizationError,
    Contact,
    DomainRegistrar,
    ObjectExists,
    ObjectNotFound,
    RegistrarError,
    RegistrarUnavailable,
)
from pba_server.sdk.testing import RegistrarContract
from tests.epp_server import EppServer, self_signed

ADA = Contact(
    name="Ada Admin",
    email="ada@example.com",
    phone="+49.301234567",
    organization="Buyer GmbH",
    street="Hauptstr. 1",
    city="Berlin",
    postal_code="10115",
    country="DE",
)
CONTACTS = {"registrant": ADA, "admin": ADA, "tech": ADA}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("epp"))


@pytest.fixture
def epp_server(certs: tuple[Path, Path]) -> Iterator[EppServer]:
    server = EppServer(*certs)
    server.start()
    yield server
    server.stop()


def plugin_class() -> type[DomainRegistrar]:
    p = {x.name: x for x in loader.discover(entry_points=False)}["epp"]
    assert p.status == "ok", p.reason
    assert p.info is not None and p.info.kind == "domain_registrar"
    return p.cls  # type: ignore[no-any-return]


def make(server: EppServer, certs: tuple[Path, Path], **over: str) -> Any:
    settings = {
        "host": "127.0.0.1",
        "port": str(server.port),
        "username": "registrar1",
        "password": "secret-pw1",
        "tls_verify": "true",
        "ca_file": str(certs[0]),
        "timeout": "5",
        "contact_prefix": "pba",
    }
    settings.update(over)
    return plugin_class()(settings)


def test_settings_are_checked():
    cls = plugin_class()
    with pytest.raises(ConfigurationError):
        cls({"host": "", "username": "abc", "password": "secret-pw1"})
    with pytest.raises(ConfigurationError):
        cls({"host": "x", "port": "0", "username": "abc", "password": "secret-pw1"})
    assert {f.name for f in cls.info.settings if f.secret} == {"password"}


def test_login_check_create_info(epp_server, certs):
    epp_server.registry.add_foreign("taken.example", "right-code")
    reg = make(epp_server, certs)
    checks = reg.check(["free.example", "taken.example"])
    assert [(c.name, c.available, c.reason) for c in checks] == [
        ("free.example", True, ""),
        ("taken.example", False, "In use"),
    ]
    r = reg.register(
        key="op-101",
        name="free.example",
        years=2,
        contacts=CONTACTS,
        nameservers=["ns1.host.example", "ns2.host.example"],
    )
    assert r.status == "active" and r.registry_id
    assert r.expires_on == date.today().replace(year=date.today().year + 2)
    commands = epp_server.registry.commands
    assert commands[0][0] == "login" and commands[-1][0] == "logout"
    assert ("create", "domain", "op-101") in commands  # clTRID = our key
    info = reg.domain_info("free.example")
    assert info.status == "active" and info.expires_on == r.expires_on
    assert info.nameservers == ("ns1.host.example", "ns2.host.example")
    d = epp_server.registry.domains["free.example"]
    assert d["registrant"] == reg.contact_id("op-101", "registrant")
    assert ("tech", reg.contact_id("op-101", "tech")) in d["contacts"]


def test_object_exists_is_2302_and_final(epp_server, certs):
    epp_server.registry.add_foreign("taken.example", "right-code")
    reg = make(epp_server, certs)
    with pytest.raises(ObjectExists) as e:
        reg.register(key="op-1", name="taken.example", years=1, contacts=CONTACTS, nameservers=[])
    assert e.value.code == "2302"
    assert not isinstance(e.value, RegistrarUnavailable)


def test_renew(epp_server, certs):
    reg = make(epp_server, certs)
    r = reg.register(key="op-2", name="renew.example", years=1, contacts=CONTACTS, nameservers=[])
    assert r.expires_on is not None
    renewed = reg.renew(key="op-3", name="renew.example", years=2, current_expiry=r.expires_on)
    assert renewed.expires_on == r.expires_on.replace(year=r.expires_on.year + 2)
    # a repeat with the old expiry date is refused by the registry (2306): no double renewal
    with pytest.raises(RegistrarError) as e:
        reg.renew(key="op-3", name="renew.example", years=2, current_expiry=r.expires_on)
    assert e.value.code == "2306"
    with pytest.raises(ObjectNotFound):
        reg.renew(key="op-4", name="nothing.example", years=1, current_expiry=r.expires_on)


def test_transfer_ok_pending_and_wrong_auth_code(epp_server, certs):
    registry = epp_server.registry
    registry.add_foreign("move.example", "right-code")
    registry.add_foreign("slow.example", "right-code")
    registry.add_foreign("guarded.example", "right-code")
    reg = make(epp_server, certs)
    r = reg.transfer(key="op-5", name="move.example", auth_code="right-code", years=1)
    assert r.status == "active" and registry.domains["move.example"]["clID"] == "registrar1"
    with pytest.raises(AuthorizationError) as e:
        reg.transfer(key="op-6", name="guarded.example", auth_code="wrong-code", years=1)
    assert e.value.code == "2201"
    registry.transfer_pending = True
    pending = reg.transfer(key="op-7", name="slow.example", auth_code="right-code", years=1)
    assert pending.status == "pending"
    assert reg.domain_info("slow.example").status == "transferring"
    # asked again (the engine polls with the same key): still pending, no error
    again = reg.transfer(key="op-7", name="slow.example", auth_code="right-code", years=1)
    assert again.status == "pending"


def test_update_nameservers_and_contacts(epp_server, certs):
    reg = make(epp_server, certs)
    reg.register(
        key="op-8",
        name="ns.example",
        years=1,
        contacts=CONTACTS,
        nameservers=["ns1.a.example", "ns2.a.example"],
    )
    info = reg.set_nameservers(
        key="op-9", name="ns.example", nameservers=["ns2.a.example", "ns3.b.example"]
    )
    assert set(info.nameservers) == {"ns2.a.example", "ns3.b.example"}
    bob = Contact(name="Bob Tech", email="bob@example.com", city="Bonn", country="DE")
    reg.set_contacts(key="op-10", name="ns.example", contacts={"tech": bob})
    d = epp_server.registry.domains["ns.example"]
    assert ("tech", reg.contact_id("op-10", "tech")) in d["contacts"]
    assert ("tech", reg.contact_id("op-8", "tech")) not in d["contacts"]
    with pytest.raises(AuthorizationError):  # another sponsor's domain
        epp_server.registry.add_foreign("theirs.example", "x")
        reg.set_nameservers(
            key="op-11", name="theirs.example", nameservers=["a.b.example", "c.d.example"]
        )


def test_dropped_connection_mid_create_then_retry_registers_once(epp_server, certs):
    registry = epp_server.registry
    registry.drop["create"] = "after"  # done at the registry, the answer lost
    reg = make(epp_server, certs)
    with pytest.raises(RegistrarUnavailable):
        reg.register(key="op-20", name="drop.example", years=1, contacts=CONTACTS, nameservers=[])
    assert "drop.example" in registry.domains
    # the engine retries with the same key, on a new connection
    r = reg.register(key="op-20", name="drop.example", years=1, contacts=CONTACTS, nameservers=[])
    assert r.status == "active" and r.expires_on == registry.domains["drop.example"]["exDate"]
    creates = [c for c in registry.commands if c[:2] == ("create", "domain")]
    assert [c[2] for c in creates] == ["op-20", "op-20"]
    # someone else's key for the same name: really taken
    with pytest.raises(ObjectExists):
        reg.register(key="op-21", name="drop.example", years=1, contacts=CONTACTS, nameservers=[])


def test_dropped_connection_mid_transfer_then_retry(epp_server, certs):
    registry = epp_server.registry
    registry.add_foreign("gone.example", "right-code")
    registry.drop["transfer"] = "after"
    reg = make(epp_server, certs)
    with pytest.raises(RegistrarUnavailable):
        reg.transfer(key="op-40", name="gone.example", auth_code="right-code", years=1)
    assert registry.domains["gone.example"]["clID"] == "registrar1"
    again = reg.transfer(key="op-40", name="gone.example", auth_code="right-code", years=1)
    assert (
        again.status == "active" and again.expires_on == registry.domains["gone.example"]["exDate"]
    )


def test_dropped_before_doing_then_retry(epp_server, certs):
    epp_server.registry.drop["create"] = "before"
    reg = make(epp_server, certs)
    with pytest.raises(RegistrarUnavailable):
        reg.register(key="op-30", name="later.example", years=1, contacts=CONTACTS, nameservers=[])
    assert "later.example" not in epp_server.registry.domains
    assert (
        reg.register(
            key="op-30", name="later.example", years=1, contacts=CONTACTS, nameservers=[]
        ).status
        == "active"
    )


def test_unreachable_wrong_password_and_untrusted_certificate(epp_server, certs, tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed_port = s.getsockname()[1]
    s.close()
    with pytest.raises(RegistrarUnavailable):
        make(epp_server, certs, port=str(closed_port)).check(["a.example"])
    with pytest.raises(RegistrarUnavailable) as e:
        make(epp_server, certs, password="wrong-pw1").check(["a.example"])
    assert "2200" in str(e.value)
    other, _ = self_signed(tmp_path)  # a CA that did not sign the server's certificate
    with pytest.raises(RegistrarUnavailable) as e:
        make(epp_server, certs, ca_file=str(other)).check(["a.example"])
    assert "CERTIFICATE_VERIFY_FAILED" in str(e.value) or "certificate" in str(e.value).lower()
    assert make(epp_server, certs, ca_file="", tls_verify="false").check(["a.example"])[0].available
    assert ssl.OPENSSL_VERSION


# ---------------------------------------------------------------- conformance kit


def _plugin(name: str) -> Any:
    return {x.name: x for x in loader.discover(entry_points=False)}[name].cls


class TestEppConformance(RegistrarContract):
    plugin = _plugin("epp")
    taken_name = "taken.example"
    transfer_name = "move.example"
    transfer_auth = "right-code"

    @pytest.fixture(autouse=True)
    def _registry(self, epp_server: EppServer, certs: tuple[Path, Path]) -> None:
        epp_server.registry.add_foreign("taken.example", "right-code")
        epp_server.registry.add_foreign("move.example", "right-code")
        self.server, self.certs = epp_server, certs

    def make_registrar(self) -> DomainRegistrar:
        return make(self.server, self.certs)  # type: ignore[no-any-return]


class TestSandboxRegistrarConformance(RegistrarContract):
    plugin = _plugin("sandbox_registrar")
    settings = {"registry": "conformance"}
    taken_name = "taken.example"
    transfer_name = "someone.example"
    transfer_auth = "any-code"
