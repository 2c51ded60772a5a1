"""Finding plugins: the ``plugins/`` folder and the ``pba_server.plugins``
entry-point group.

A plugin that fails to import, has no ``PLUGIN`` or targets an incompatible
SDK version is recorded as broken with the reason and logged; it never stops
the server. A plugins folder that is missing or not a directory does: the
server would otherwise run without the plugins its instances need.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from pba_server.core import resources
from pba_server.core.clock import Clock
from pba_server.sdk import SDK_VERSION, PaymentGateway, PluginInfo, version_compatible
from pba_server.sdk.net import Net

log = logging.getLogger("pba.plugins")

ENTRY_POINT_GROUP = "pba_server.plugins"


class PluginFolderError(Exception):
    """The plugins folder is missing, not a directory or cannot be read: the
    server refuses to start rather than run without its plugins."""


def builtin_dir() -> Path:
    """The plugins shipped with the server (the repository's plugins/,
    installed as ``pba_server._plugins``)."""
    try:
        return resources.builtin_plugins_dir()
    except resources.MissingResource as exc:
        raise PluginFolderError(f"the built-in plugins folder is missing: {exc}") from None


def __getattr__(name: str) -> Any:
    # DEFAULT_DIR is looked up on use, so that a broken installation is
    # reported by discover() (PluginFolderError) instead of failing the import
    if name == "DEFAULT_DIR":
        return builtin_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class LoadedPlugin:
    name: str
    source: str  # file path or "entry point <name>"
    status: str  # "ok" | "broken"
    reason: str = ""
    cls: Any = None  # the plugin class; its base depends on info.kind

    @property
    def info(self) -> PluginInfo | None:
        return self.cls.info if self.cls is not None else None


def kind_bases() -> dict[str, type]:
    """The base class of each plugin kind (``PluginInfo.kind`` -> class).
    Each kind's module is imported here, one line per kind."""
    from pba_server.sdk import fraud, notify, provisioning, registrar

    return {
        "payment_gateway": PaymentGateway,
        "processing_module": provisioning.ProcessingModule,
        "domain_registrar": registrar.DomainRegistrar,
        "fraud_screener": fraud.FraudScreener,
        "notification_channel": notify.NotificationChannel,
    }


def _check(name: str, source: str, obj: Any) -> LoadedPlugin:
    info = getattr(obj, "info", None) if isinstance(obj, type) else None
    if not isinstance(info, PluginInfo):
        return LoadedPlugin(name, source, "broken", "PLUGIN.info is not a PluginInfo")
    base = kind_bases().get(info.kind)
    if base is None:
        return LoadedPlugin(name, source, "broken", f"unknown plugin kind {info.kind!r}")
    if not issubclass(obj, base):
        return LoadedPlugin(name, source, "broken", f"PLUGIN is not a {base.__name__} subclass")
    if not version_compatible(info.sdk_version):
        return LoadedPlugin(
            info.name,
            source,
            "broken",
            f"targets SDK {info.sdk_version}; this server provides SDK {SDK_VERSION}",
        )
    return LoadedPlugin(info.name, source, "ok", cls=obj)


def _failure(exc: BaseException) -> str:
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return f"import failed: {last}"


def _load_file(path: Path) -> LoadedPlugin:
    name = path.stem if path.is_file() else path.name
    target = path if path.is_file() else path / "__init__.py"
    modname = f"pba_plugins.{name}"
    try:
        spec = importlib.util.spec_from_file_location(
            modname, target, submodule_search_locations=[str(path)] if path.is_dir() else None
        )
        if spec is None or spec.loader is None:
            return LoadedPlugin(name, str(path), "broken", "not importable")
        module: ModuleType = importlib.util.module_from_spec(spec)
        sys.modules[modname] = module
        spec.loader.exec_module(module)
    except BaseException as exc:  # a plugin must never take the server down
        sys.modules.pop(modname, None)
        if isinstance(exc, KeyboardInterrupt):
            raise
        return LoadedPlugin(name, str(path), "broken", _failure(exc))
    if not hasattr(module, "PLUGIN"):
        return LoadedPlugin(name, str(path), "broken", "module defines no PLUGIN")
    return _check(name, str(path), module.PLUGIN)


def discover(plugins_dir: Path | None = None, *, entry_points: bool = True) -> list[LoadedPlugin]:
    """Every plugin found, loaded or broken, sorted by name; the first of two
    plugins with the same name wins, the other is reported broken. A folder
    that is missing or not a directory raises PluginFolderError."""
    folder = plugins_dir or builtin_dir()
    if not folder.is_dir():
        what = "is not a directory" if folder.exists() else "does not exist"
        raise PluginFolderError(f"{folder} {what}")
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise PluginFolderError(f"{folder} cannot be read: {exc.strerror}") from None
    found: list[LoadedPlugin] = []
    for path in entries:
        if path.name.startswith(("_", ".")):
            continue
        if (path.is_file() and path.suffix == ".py") or (
            path.is_dir() and (path / "__init__.py").exists()
        ):
            found.append(_load_file(path))
    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            source = f"entry point {ep.name} ({ep.value})"
            try:
                obj = ep.load()
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                found.append(LoadedPlugin(ep.name, source, "broken", _failure(exc)))
                continue
            found.append(_check(ep.name, source, getattr(obj, "PLUGIN", obj)))
    result: dict[str, LoadedPlugin] = {}
    for p in found:
        if p.name in result:
            p = LoadedPlugin(p.name, p.source, "broken", f"duplicate of {result[p.name].source}")
            result[f"{p.name} ({p.source})"] = p
        else:
            result[p.name] = p
    for p in result.values():
        if p.status == "broken":
            log.warning("plugin %s from %s is broken: %s", p.name, p.source, p.reason)
    return sorted(result.values(), key=lambda p: p.name)


# The plugins of this process, loaded once by bootstrap (or on first use).
# Process-wide on purpose: plugin code is imported into the interpreter
# (sys.modules is one per process) from the operator's plugins_dir; the
# instances and their settings are rows, per app (docs/architecture.md).
_loaded: dict[str, LoadedPlugin] | None = None


def set_plugins(plugins: list[LoadedPlugin]) -> None:
    global _loaded
    _loaded = {p.name: p for p in plugins}


def plugins() -> dict[str, LoadedPlugin]:
    if _loaded is None:
        set_plugins(discover())
    assert _loaded is not None
    return _loaded


def instantiate(cls: Any, settings: dict[str, str], *, clock: Clock) -> Any:
    """Build a plugin object and hand it the server's clock and its net helper
    (connections under the outgoing-address policy); both are there from
    ``__init__`` on. The only way the server builds plugins."""
    obj = cls.__new__(cls)
    obj.clock = clock
    obj.net = Net()
    obj.__init__(settings)
    return obj
