"""The one place that wires engine, services, protocols and the server."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from pba_server import migrate
from pba_server.api.dispatch import Dispatcher
from pba_server.api.soap import SoapHandler
from pba_server.api.xmlrpc import XmlRpcHandler
from pba_server.config import Settings
from pba_server.core.clock import Clock, SystemClock
from pba_server.core.db import check_connection_budget, connection_budget, make_engine
from pba_server.core.jobs import JobSpec
from pba_server.core.logsafe import OneLineFormatter
from pba_server.core.operations import Operation, registry
from pba_server.core.runtime import Runtime
from pba_server.core.secrets import SecretBox, load_or_create_key
from pba_server.events import runtime as events_runtime
from pba_server.notify.delivery import Deliverer, MailSettings

log = logging.getLogger("pba")


def load_operations() -> dict[str, Operation]:
    """Import every feature's service module so its operations register."""
    import pba_server.accounts.service
    import pba_server.billing.run_service
    import pba_server.billing.service
    import pba_server.catalog.service
    import pba_server.core.audit
    import pba_server.domains.service
    import pba_server.dunning.service
    import pba_server.events.service
    import pba_server.notify.handlers
    import pba_server.notify.template_service
    import pba_server.orders.service
    import pba_server.payments.service
    import pba_server.provisioning.service
    import pba_server.subscriptions.service
    import pba_server.usage.service  # noqa: F401

    register_hooks()
    return registry()


def register_hooks() -> None:
    """Hooks a lower feature calls and a higher one fills (once per process:
    they hold functions, no settings)."""
    from pba_server.provisioning.registry import USAGE_SINKS
    from pba_server.usage.service import sync_usage_sink

    if sync_usage_sink not in USAGE_SINKS:
        USAGE_SINKS.append(sync_usage_sink)


def feature_jobs(settings: Settings) -> dict[str, JobSpec]:
    """Every feature's periodic jobs (its ``jobs.py``), for the scheduler."""
    from pba_server.billing import jobs as billing
    from pba_server.core import housekeeping
    from pba_server.domains import jobs as domains
    from pba_server.dunning import jobs as dunning
    from pba_server.events import jobs as events
    from pba_server.orders import jobs as orders
    from pba_server.payments import jobs as payments
    from pba_server.provisioning import jobs as provisioning
    from pba_server.subscriptions import jobs as subscriptions

    specs: dict[str, JobSpec] = {}
    for feature in (
        housekeeping,
        payments,
        domains,
        provisioning,
        orders,
        subscriptions,
        events,
        billing,
        dunning,
    ):
        for spec in feature.jobs(settings):
            if spec.name in specs:
                raise ValueError(f"job {spec.name} declared twice")
            specs[spec.name] = spec
    return specs


class SchemaNotCurrent(SystemExit):
    pass


@dataclass
class App:
    settings: Settings
    engine: Engine
    clock: Clock
    secrets: SecretBox
    runtime: Runtime
    jobs: dict[str, JobSpec]
    operations: dict[str, Operation]
    dispatcher: Dispatcher
    soap: SoapHandler
    xmlrpc: XmlRpcHandler
    deliverer: Deliverer

    def health(self) -> tuple[bool, dict[str, Any]]:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            state, current, head = migrate.schema_state(self.engine)
        except Exception as exc:
            return False, {
                "status": "unavailable",
                "database": "unreachable",
                "error": type(exc).__name__,
            }
        ok = state == "current"
        return ok, {
            "status": "ok" if ok else "unavailable",
            "database": "reachable",
            "schema": state,
            "revision": current,
            "head": head,
        }


def secret_box(settings: Settings) -> SecretBox:
    key = (
        settings.secret_key.encode()
        if settings.secret_key
        else load_or_create_key(Path(settings.secret_key_file))
    )
    return SecretBox(key)


def check_schema(engine: Engine, settings: Settings) -> None:
    """Migrate an embedded SQLite database; refuse to serve any other that is not current."""
    state, current, head = migrate.schema_state(engine)
    if state == "current":
        return
    if state in ("empty", "behind") and (settings.auto_migrate or engine.dialect.name == "sqlite"):
        log.info("migrating the database schema from %s to %s", current or "empty", head)
        migrate.upgrade(engine)
        return
    raise schema_not_current(engine.url.render_as_string(hide_password=True), state, current, head)


def schema_not_current(
    shown_url: str, state: str, current: str | None, head: str
) -> SchemaNotCurrent:
    """What every command says about a schema it cannot work on (``shown_url``
    without the password: the message ends up in logs)."""
    if state == "ahead":
        return SchemaNotCurrent(
            f"the database schema ({current}) is newer than this pba-server ({head}); "
            "upgrade pba-server"
        )
    return SchemaNotCurrent(
        f"the database schema is {'empty' if current is None else 'behind'} "
        f"(at {current or 'nothing'}, this server needs {head}); run:\n"
        f"    pba-server migrate --database '{shown_url}'"
    )


def require_current_schema(engine: Engine) -> None:
    """For commands other than ``serve``: never migrate, refuse unless current."""
    state, current, head = migrate.schema_state(engine)
    if state != "current":
        shown = engine.url.render_as_string(hide_password=True)
        raise schema_not_current(shown, state, current, head)


def build_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    engine: Engine | None = None,
    check: bool = True,
) -> App:
    load_plugins(settings)  # first: a missing plugins folder refuses before anything is written
    engine = engine or engine_of(settings)
    if check:
        check_schema(engine, settings)
        check_connections(engine, settings)
    clock = clock or SystemClock()
    box = secret_box(settings)
    ops = load_operations()
    runtime = Runtime(settings=settings, clock=clock, secrets=box)
    wire_ports(runtime)
    plugin_calls(settings)
    dispatcher = Dispatcher(engine, clock, box, ops, runtime=runtime)
    deliverer = event_deliverer(settings, engine, clock, box)
    events_policy(settings)
    events_runtime.register(engine, deliverer)
    return App(
        settings=settings,
        engine=engine,
        clock=clock,
        secrets=box,
        runtime=runtime,
        jobs=feature_jobs(settings),
        operations=ops,
        dispatcher=dispatcher,
        soap=SoapHandler(dispatcher, ops),
        xmlrpc=XmlRpcHandler(dispatcher, ops),
        deliverer=deliverer,
    )


def wire_ports(runtime: Runtime) -> None:
    """Each port (a Protocol of a lower feature) gets its implementation from
    the feature above it (docs/architecture.md, "Ports")."""
    from pba_server.billing.billed import Billed
    from pba_server.billing.ports import RenewalOrders
    from pba_server.orders.desk import Desk
    from pba_server.orders.provisioner import ENGINE, Provisioner
    from pba_server.orders.renewals import Renewals
    from pba_server.provisioning.lookup import Lookup
    from pba_server.subscriptions.ports import OrderDesk, ServiceLookup
    from pba_server.usage.ports import BilledPeriods

    runtime.provide(OrderDesk, Desk())
    runtime.provide(ServiceLookup, Lookup())
    runtime.provide(Provisioner, ENGINE)
    runtime.provide(BilledPeriods, Billed())
    runtime.provide(RenewalOrders, Renewals())


def engine_of(settings: Settings) -> Engine:
    """The API engine, its pool sized by the settings (docs/locking.md, "Connections")."""
    return make_engine(
        settings.database,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_recycle=settings.db_pool_recycle_seconds,
    )


def check_connections(engine: Engine, settings: Settings) -> str | None:
    """Warn (in the log) when the settings let the server take more than
    ``db_connection_share`` percent of PostgreSQL's ``max_connections``."""
    budget = connection_budget(
        workers=settings.workers,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        billing_run_workers=settings.billing_run_workers,
    )
    return check_connection_budget(engine, budget, settings.db_connection_share)


def load_plugins(settings: Settings) -> None:
    """Discover plugins once; broken ones are logged and listed, never fatal.
    A plugins folder that is missing or not a directory raises
    ``loader.PluginFolderError``: the server does not start without its plugins."""
    from pba_server.sdk import loader

    folder = Path(settings.plugins_dir) if settings.plugins_dir else None
    loader.set_plugins(loader.discover(folder))


def plugin_calls(settings: Settings) -> None:
    """Pools, deadlines and breakers of plugin calls (sdk.guard)."""
    from pba_server.sdk import guard as plugincall

    plugincall.configure(plugincall.GuardSettings.from_settings(settings))


def events_policy(settings: Settings) -> None:
    from pba_server.core import netpolicy

    netpolicy.configure(
        allow_private=settings.webhook_allow_private,
        allowed_networks=settings.outbound_allowed_networks,
    )


def event_deliverer(settings: Settings, engine: Engine, clock: Clock, box: SecretBox) -> Deliverer:
    mail = MailSettings(
        host=settings.smtp_host,
        port=settings.smtp_port,
        security=settings.smtp_security,
        user=settings.smtp_user,
        password=settings.smtp_password,
        sender=settings.mail_from,
    )
    return Deliverer(engine, clock, box, mail)


def configure_logging(level: str, *, access_log: bool = True) -> None:
    handler = logging.StreamHandler(sys.stdout)
    # one record, one line: control characters a client sent are escaped
    handler.setFormatter(
        OneLineFormatter("%(message)s" if level.upper() != "DEBUG" else "%(name)s %(message)s")
    )
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
    for noisy in ("spyne", "twisted", "alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # spyne logs every client fault (a wrong password, say) at ERROR with a
    # traceback: anyone could flood the log. Our access log has the code.
    logging.getLogger("spyne.application.client").setLevel(logging.CRITICAL)
    if not access_log:  # e.g. when a front proxy already logs every request
        logging.getLogger("pba.access").setLevel(logging.WARNING)
