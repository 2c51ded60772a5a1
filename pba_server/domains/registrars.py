"""Lookups the domain operations (their rooms) and the provisioning
module (:mod:`.module`) share: a registrar plugin object for an instance,
the TLD that sells a name, a domain row's contacts."""

from __future__ import annotations

import json

from sqlalchemy import select

from pba_server.core.clock import Clock
from pba_server.core.secrets import SecretBox
from pba_server.domains.models import Domain, Tld
from pba_server.payments.models import PluginInstance
from pba_server.payments.plugin_objects import plugin_object
from pba_server.sdk.registrar import Contact, DomainRegistrar


def registrar_for(box: SecretBox, inst: PluginInstance, clock: Clock) -> DomainRegistrar:
    """A registrar plugin object for ``inst``, its secrets decrypted in memory only."""
    registrar: DomainRegistrar = plugin_object(box, inst, "domain_registrar", clock)
    return registrar


def ancestor_ids(path: str) -> list[int]:
    """The account ids on an account path, the root first."""
    return [int(x) for x in path.strip("/").split("/") if x]


def tld_of(session: object, account_path: str, name: str) -> Tld | None:
    """The active TLD that sells ``name`` to the account at ``account_path``:
    the longest matching TLD, owned by the nearest account above it (or itself)."""
    from sqlalchemy.orm import Session

    assert isinstance(session, Session)
    ids = ancestor_ids(account_path)
    labels = name.split(".")
    suffixes = [".".join(labels[i:]) for i in range(1, len(labels))]
    rows = session.scalars(
        select(Tld).where(Tld.owner_id.in_(ids), Tld.name.in_(suffixes), Tld.status == "active")
    ).all()
    if not rows:
        return None
    depth = {acc: i for i, acc in enumerate(ids)}
    return max(rows, key=lambda t: (len(t.name), depth[t.owner_id]))


def contacts_of(d: Domain) -> dict[str, Contact]:
    raw: dict[str, dict[str, str]] = json.loads(d.contacts or "{}")
    return {role: Contact.from_dict(c) for role, c in raw.items()}
