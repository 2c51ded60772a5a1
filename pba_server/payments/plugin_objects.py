"""Building a plugin object for a configured instance: the one place that
merges defaults, plain settings and decrypted secrets, and hands the object
the server's clock. Every plugin kind is built here."""

from __future__ import annotations

import json
from typing import Any

from pba_server.core.clock import Clock
from pba_server.core.errors import InvalidState, ValidationError
from pba_server.core.secrets import SecretBox
from pba_server.payments.models import PluginInstance
from pba_server.sdk import loader


def plugin_object(box: SecretBox, inst: PluginInstance, kind: str, clock: Clock) -> Any:
    """The plugin object of instance ``inst`` (which must be of ``kind``), its
    secrets decrypted in memory only, its clock the server's."""
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
    return loader.instantiate(cls, settings, clock=clock)
