"""Building a plugin object for a configured instance: the one place that
merges defaults, plain settings and decrypted secrets, and hands the object
the server's clock. Every plugin kind is built here, and every object is
handed out guarded (:mod:`pba_server.sdk.guard`): its calls run on the
instance's own threads with a deadline, behind a circuit breaker, their
results checked and their errors made fit for the tenant."""

from __future__ import annotations

import json
from typing import Any

from pba_server.core.clock import Clock
from pba_server.core.errors import InvalidState, ValidationError
from pba_server.core.secrets import SecretBox
from pba_server.payments.models import PluginInstance
from pba_server.sdk import guard as plugincall
from pba_server.sdk import loader


def plugin_object(box: SecretBox, inst: PluginInstance, kind: str, clock: Clock) -> Any:
    """The plugin object of instance ``inst`` (which must be of ``kind``), its
    secrets decrypted in memory only, its clock the server's; guarded."""
    p = loader.plugins().get(inst.plugin)
    if p is None or p.status != "ok" or p.cls is None:
        raise InvalidState(f"plugin {inst.plugin!r} of instance {inst.id} is not loaded")
    cls = p.cls
    if cls.info.kind != kind:
        raise ValidationError("instance_id", f"instance {inst.id} is not a {kind} plugin")
    settings: dict[str, str] = {
        f.name: f.default for f in cls.info.settings if f.default is not None
    }
    settings.update(json.loads(inst.settings))
    settings.update(json.loads(box.decrypt(inst.secrets)))
    secret_names = {f.name for f in cls.info.settings if f.secret}
    secrets = tuple(str(v) for k, v in settings.items() if k in secret_names and v)
    obj = plugincall.built(
        lambda: loader.instantiate(cls, settings, clock=clock),
        plugin=inst.plugin,
        instance_id=inst.id,
        secrets=secrets,
    )
    base = loader.kind_bases()[kind]
    created = inst.created_at.isoformat() if inst.created_at is not None else ""
    return plugincall.runtime().wrap(
        obj,
        base,
        instance_id=inst.id,
        plugin=inst.plugin,
        key=(inst.id, inst.plugin, created),
        secrets=secrets,
    )
