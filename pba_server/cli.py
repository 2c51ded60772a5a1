"""The ``pba-server`` command."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import textwrap
from pathlib import Path
from typing import Any, NoReturn

from pba_server import config

# relative to the working directory: an installed package has no source tree to write into
WSDL_PATH = Path("wsdl") / "pba.wsdl"
WSDL_LOCATION = "http://127.0.0.1:8080/soap"

DESCRIPTION = (
    "pba-server: headless business automation (billing, provisioning, domains) for "
    "hosting and cloud providers. It serves SOAP (one WSDL) and XML-RPC with the same "
    "operations; these commands run it and look after its database."
)
EPILOG = (
    "Run `pba-server COMMAND --help` for a command's options; `pba-server serve --help` "
    "lists every setting. Exit status: 0 ok, 1 the work failed (an unexpected error, a "
    "ledger mismatch), 2 bad settings or arguments, database unreachable or its schema "
    "not current, or the port could not be bound. --debug (or PBA_DEBUG=1) shows the "
    "traceback of an unexpected error."
)


def version() -> str:
    from importlib import metadata

    try:
        return f"pba-server {metadata.version('pba-server')}"
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        return "pba-server (version unknown: the package is not installed)"


class _Parser(argparse.ArgumentParser):
    """Usage mistakes in one line, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"pba-server: {message} (see `{self.prog} --help`)\n")


def _db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--database",
        metavar="URL",
        help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db "
        "(default: PBA_DATABASE_URL, then the config file, then "
        "sqlite:///pba-data/pba.sqlite)",
    )
    p.add_argument("--config", metavar="FILE", help="config file (default: etc/pba-server.conf)")


def _common(p: argparse.ArgumentParser) -> None:
    # also accepted after the command; SUPPRESS keeps a top-level --debug from being reset
    p.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )


def _progress_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--progress-interval",
        metavar="SECONDS",
        help="when not on a terminal, log a progress line this often (0: after every step; "
        "default: the progress_interval_seconds setting, 10)",
    )


def _whole_number(option: str, minimum: int) -> Any:
    """An argparse type: an integer of at least ``minimum``, else one ConfigError line."""

    def parse(text: str) -> int:
        spec = config.Spec(name=option, kind=int, default=minimum, help="", minimum=minimum)
        return int(config.convert(spec, text))

    return parse


def parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="pba-server",
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    ap.add_argument("--version", action="version", version=version())
    ap.add_argument(
        "--debug", action="store_true", help="show the traceback of an unexpected error"
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "serve",
        help="run the SOAP + XML-RPC server",
        # wrapped here: the raw formatter keeps the settings list's layout
        description=textwrap.fill(
            "Run the server. On first start of an empty SQLite "
            "database it is created, migrated and initialized (the generated "
            "admin password is printed once). The 'listening on' line is printed "
            "once the port is bound.",
            78,
        ),
        epilog=config.help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _db_arg(s)
    for spec in config.SETTINGS:
        if spec.flag:
            metavar = spec.name.upper() if spec.kind is int else None
            help_ = f"{spec.help} (default {spec.shown_default()}; {spec.allowed()})"
            s.add_argument(spec.option, metavar=metavar, help=help_.replace("%", "%%"))
    s.add_argument("--worker-fds", help=argparse.SUPPRESS)

    m = sub.add_parser(
        "migrate",
        help="apply database migrations",
        description="Apply the Alembic migrations in migrations/ up to the newest (or "
        "--revision), showing progress.",
    )
    _db_arg(m)
    m.add_argument("--revision", default="head")
    _progress_arg(m)

    i = sub.add_parser(
        "init",
        help="create the provider account and first admin",
        description="Create the provider account and its first admin user. "
        "Refuses to run on a database that already has a provider.",
    )
    _db_arg(i)
    i.add_argument("--admin-login", default="admin")
    i.add_argument(
        "--admin-password", help="admin password (asked for, or generated when not a terminal)"
    )
    i.add_argument("--provider-name", default="Provider")
    i.add_argument("--currency", default="USD", help="the provider's currency (ISO 4217)")

    v = sub.add_parser(
        "verify-ledger",
        help="check the books: balanced transactions, balances equal to their entries",
        description="Recompute every account's balance from the ledger entries and check "
        "that each transaction balances, that cached balances and unsettled invoices agree "
        "with the entries and that no invoice or payment is settled beyond its amount. "
        "Prints each mismatch; exits 1 if there is any.",
    )
    _db_arg(v)

    b = sub.add_parser(
        "billing-run",
        help="invoice every subscription due by a date (exactly once; safe to rerun)",
        description="Bill every active subscription whose next billing date is on or before "
        "--as-of (default: today, UTC): the next period in advance, the overage of the "
        "period that ended, late usage, tax; one invoice per customer and issuer; then "
        "the advanced resellers' wholesale invoices. Each (subscription, period, kind) is "
        "billed exactly once, so a rerun, a concurrent run or a run after a crash never "
        "bills twice. Shows progress on stderr (an updating line on a terminal, else a "
        "line every --progress-interval seconds) and prints a summary at the end.",
    )
    _db_arg(b)
    b.add_argument("--as-of", metavar="YYYY-MM-DD", help="bill what is due by this date")
    b.add_argument(
        "--dry-run", action="store_true", help="show the invoices it would issue; write nothing"
    )
    b.add_argument(
        "--account", type=_whole_number("--account", 1), metavar="ID", help="only this subtree"
    )
    b.add_argument(
        "--workers",
        type=_whole_number("--workers", 1),
        default=1,
        help="processes claiming batches side by side",
    )
    b.add_argument(
        "--batch-size",
        type=_whole_number("--batch-size", 1),
        default=500,
        help="customers per transaction",
    )
    b.add_argument("--json", action="store_true", help="print the summary as JSON")
    _progress_arg(b)

    w = sub.add_parser(
        "export-wsdl",
        help="write the WSDL to wsdl/pba.wsdl",
        description="Write the WSDL the server serves, with the address "
        f"{WSDL_LOCATION}, to a file (default: wsdl/pba.wsdl under the current directory; "
        "run it from the repository root to refresh the committed copy).",
    )
    w.add_argument("--output", default=str(WSDL_PATH), help="default: %(default)s")

    r = sub.add_parser(
        "export-roles",
        help="write the roles table of docs/api.md from the operation table",
        description="Rewrite the generated roles table in docs/api.md (under the current "
        "directory; run it from the repository root) from the operation table.",
    )
    r.add_argument("--doc", default="docs/api.md", help="default: %(default)s")

    c = sub.add_parser(
        "config",
        help="check a configuration, or print the example config file",
        description="`config check` reads the settings as `serve` would (file, environment, "
        "--database) and prints them, secrets masked, or the one line saying what is wrong. "
        "`config example` prints etc/pba-server.conf.example (every setting, its default and "
        "allowed values).",
    )
    c.add_argument("action", choices=("check", "example"))
    _db_arg(c)

    for p in (s, m, i, v, b, w, c, r):
        _common(p)
    return ap


def _settings(args: argparse.Namespace, *, prepare: bool = True, **extra: Any) -> config.Settings:
    overrides = {"database": getattr(args, "database", None), **extra}
    return config.load(getattr(args, "config", None), overrides, prepare=prepare)


def _progress(what: str, total: int | None, unit: str, interval: int) -> Any:
    from pba_server.core.clock import SystemClock
    from pba_server.core.progress import Progress

    # stderr: stdout carries the result (a summary, JSON) and may be piped on
    return Progress(
        what,
        total,
        unit,
        stream=sys.stderr,
        tty=sys.stderr.isatty(),
        clock=SystemClock(),
        interval=interval,
    )


def _existing_database(settings: config.Settings, pool_size: int = 2) -> Any:
    """The engine of a database that must already be there and current (commands
    that work on data never create or migrate one: they say what serve says)."""
    from pba_server import bootstrap, migrate
    from pba_server.core.db import make_engine

    path = config.sqlite_path(settings.database)
    if path is not None and not path.exists():  # connecting would create an empty file
        raise bootstrap.schema_not_current(
            config.mask_url(settings.database), "empty", None, migrate.head_revision()
        )
    engine = make_engine(settings.database, pool_size=pool_size)
    try:
        bootstrap.require_current_schema(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def cmd_serve(args: argparse.Namespace) -> int:
    flags = {spec.name: getattr(args, spec.name) for spec in config.SETTINGS if spec.flag}
    settings = _settings(args, **flags)  # before anything is built: a bad value creates nothing
    from pba_server import bootstrap
    from pba_server.accounts import setup
    from pba_server.api import serve

    bootstrap.configure_logging(settings.log_level, access_log=settings.access_log)
    if args.worker_fds:
        app = bootstrap.build_app(settings, check=False)
        serve.run_worker(app, [int(x) for x in args.worker_fds.split(",")])
        return 0
    from pba_server.sdk import loader

    try:
        app = bootstrap.build_app(settings)
    except loader.PluginFolderError as exc:
        print(f"pba-server: plugins_dir: {exc}", file=sys.stderr)
        return 2
    if not setup.provider_exists(app.engine):
        result = setup.initialize(app.engine, app.clock, app.secrets)
        print("First start: created the provider account and an admin user.")
        print(f"  login:    {result.admin_login}")
        print(f"  password: {result.admin_password}   (shown only this once)")
        sys.stdout.flush()
    database = app.engine.url.render_as_string(hide_password=True)

    plugins = loader.plugins().values()
    broken = sum(p.status == "broken" for p in plugins)

    def listening(port: int, tls_port: int) -> None:
        base = f"http://{settings.host}:{port}"
        print(
            f"pba-server listening on {base} ({settings.workers} worker(s), database "
            f"{database}, plugins: {len(plugins) - broken} loaded, {broken} broken)"
        )
        print(f"  SOAP:    {base}/soap   WSDL: {base}/soap?wsdl")
        print(f"  XML-RPC: {base}/xmlrpc")
        print(f"  health:  {base}/health")
        if tls_port:
            print(f"  TLS:     https://{settings.host}:{tls_port}/soap")
        sys.stdout.flush()

    try:
        if settings.workers > 1:
            app.engine.dispose()
            argv = [a for a in sys.argv[1:]]
            return serve.run_master(
                argv,
                settings.workers,
                settings.host,
                settings.port,
                settings.tls_port,
                on_listening=listening,
            )
        serve.run_worker(app, on_listening=listening)
    except serve.ListenError as exc:
        print(f"pba-server: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from alembic import command
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from pba_server import migrate
    from pba_server.core.db import make_engine

    settings = _settings(args, progress_interval_seconds=args.progress_interval)
    engine = make_engine(settings.database)
    before = migrate.current_revision(engine)
    cfg = migrate.alembic_config(engine)
    bad_revision = f"expected a revision of migrations/versions, or head (now: {before})"
    try:
        script = ScriptDirectory.from_config(cfg)
        steps = len(list(script.iterate_revisions(args.revision, before or "base")))
    except CommandError as exc:
        raise config.ConfigError("--revision", f"{args.revision!r}: {exc}", bad_revision) from None
    reporter = _progress("migrate", steps, "revisions", settings.progress_interval_seconds)
    applied = 0

    def step(**kw: Any) -> None:
        nonlocal applied
        applied += 1
        reporter.update(applied, f"now at {kw['step'].up_revision_id}")

    cfg.attributes["on_version_apply"] = [step]
    try:
        command.upgrade(cfg, args.revision)
    except CommandError as exc:
        raise config.ConfigError("--revision", f"{args.revision!r}: {exc}", bad_revision) from None
    finally:
        reporter.finish()
        after = migrate.current_revision(engine)
        engine.dispose()
    print(f"database schema: {before or 'empty'} -> {after}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from pba_server import bootstrap, migrate
    from pba_server.accounts import setup
    from pba_server.core.clock import SystemClock
    from pba_server.core.db import make_engine
    from pba_server.core.errors import PbaError

    engine = make_engine(settings.database)
    state, _cur, _head = migrate.schema_state(engine)
    if state == "empty":
        migrate.upgrade(engine)
    else:
        bootstrap.require_current_schema(engine)
    password = args.admin_password
    if password is None and sys.stdin is not None and sys.stdin.isatty():  # None: fd 0 closed
        password = getpass.getpass("admin password: ")
        if password != getpass.getpass("again: "):
            print("pba-server: passwords differ", file=sys.stderr)
            return 2
    try:
        result = setup.initialize(
            engine,
            SystemClock(),
            bootstrap.secret_box(settings),
            admin_login=args.admin_login,
            admin_password=password,
            provider_name=args.provider_name,
            currency=args.currency,
        )
    except PbaError as exc:
        print(f"pba-server: {exc.message}", file=sys.stderr)
        return 1
    print(f"created provider account {result.provider_id} and admin {result.admin_login!r}")
    if result.generated:
        print(f"  password: {result.admin_password}   (shown only this once)")
    return 0


def cmd_verify_ledger(args: argparse.Namespace) -> int:
    from pba_server.billing import ledger
    from pba_server.core.db import UnitOfWork

    engine = _existing_database(_settings(args, prepare=False))
    try:
        with UnitOfWork(engine) as uow:
            problems = ledger.verify(uow.session)
    finally:
        engine.dispose()
    for p in problems:
        print(f"mismatch: {p}")
    if problems:
        print(f"pba-server: the ledger has {len(problems)} mismatch(es)", file=sys.stderr)
        return 1
    print("ledger ok")
    return 0


def cmd_billing_run(args: argparse.Namespace) -> int:
    from datetime import date

    try:
        as_of = date.fromisoformat(args.as_of) if args.as_of else None
    except ValueError:
        raise config.ConfigError(
            "--as-of", f"{args.as_of!r} is not a date", "expected YYYY-MM-DD"
        ) from None
    settings = _settings(args, prepare=False, progress_interval_seconds=args.progress_interval)
    engine = _existing_database(settings, pool_size=max(2, args.workers))

    from pba_server import bootstrap
    from pba_server.billing import run as billing_run
    from pba_server.billing.ports import RenewalOrders
    from pba_server.core.clock import SystemClock
    from pba_server.core.errors import PbaError
    from pba_server.core.runtime import Runtime

    clock = SystemClock()
    box = bootstrap.secret_box(settings)
    runtime = Runtime(settings=settings, clock=clock, secrets=box)
    bootstrap.wire_ports(runtime)
    day = as_of or clock.now().date()
    try:
        due = billing_run.due_count(engine, day, args.account)
        reporter = _progress(
            "billing run", due, "subscriptions", settings.progress_interval_seconds
        )

        def progress(s: billing_run.RunSummary) -> None:
            reporter.update(min(s.subscriptions, due), f"{s.invoices} invoice(s)")

        try:
            summary = billing_run.run(
                engine,
                clock,
                as_of=day,
                dry_run=args.dry_run,
                account_id=args.account,
                workers=args.workers,
                batch_size=args.batch_size,
                progress=progress,
                secrets=box,
                renewals=runtime.port(RenewalOrders),
            )
        finally:
            reporter.finish()
    except PbaError as exc:
        print(f"pba-server: {exc.message}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    if args.dry_run and not args.json:
        for d in summary.drafts:
            print(f"invoice to account {d.account_id} from {d.issuer_id}: {d.total} {d.currency}")
            for ln in d.lines:
                print(f"  {ln.description}: {ln.quantity} x {ln.unit_price} = {ln.total}")
    print(billing_run.summary_json(summary) if args.json else summary.line())
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    if args.action == "example":
        sys.stdout.write(config.example_config())
        return 0
    settings = _settings(args, prepare=False)
    source = getattr(args, "config", None) or os.environ.get("PBA_CONFIG")
    if not source:
        found = [p for p in config.DEFAULT_CONFIG_FILES if p.exists()]
        source = str(found[0]) if found else "none (defaults and environment)"
    print(f"configuration ok; config file: {source}")
    for line in config.shown_settings(settings):
        print(f"  {line}")
    return 0


def wsdl_text() -> bytes:
    from pba_server.api.soap import SoapHandler
    from pba_server.bootstrap import load_operations

    ops = load_operations()
    return SoapHandler(None, ops).wsdl(WSDL_LOCATION)  # type: ignore[arg-type]


def cmd_export_wsdl(args: argparse.Namespace) -> int:
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(wsdl_text())
    print(f"wrote {out}")
    return 0


def cmd_export_roles(args: argparse.Namespace) -> int:
    from pba_server.api.roles_doc import with_roles_table
    from pba_server.bootstrap import load_operations

    doc = Path(args.doc)
    doc.write_text(with_roles_table(doc.read_text(encoding="utf-8"), load_operations()), "utf-8")
    print(f"wrote {doc}")
    return 0


def _debug(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("PBA_DEBUG", "") in ("1", "true", "yes", "on")


def main(argv: list[str] | None = None) -> int:
    """Every failure ends here as one line on stderr: 2 for what the operator can
    fix (a setting, an argument, the database, the port), 1 for anything else
    (its traceback only with --debug or PBA_DEBUG=1)."""
    words = sys.argv[1:] if argv is None else argv
    from sqlalchemy.exc import DBAPIError

    try:
        args = parser().parse_args(words)
        handler = {
            "serve": cmd_serve,
            "migrate": cmd_migrate,
            "init": cmd_init,
            "export-wsdl": cmd_export_wsdl,
            "verify-ledger": cmd_verify_ledger,
            "billing-run": cmd_billing_run,
            "config": cmd_config,
            "export-roles": cmd_export_roles,
        }[args.command]
        return handler(args)
    except config.ConfigError as exc:
        print(f"pba-server: {exc}", file=sys.stderr)
        return 2
    except DBAPIError as exc:
        # an operator's mistake (wrong URL, database down): one line, no traceback
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        print(f"pba-server: cannot use the database: {reason}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        if isinstance(exc.code, str):  # a message (the schema is not current, say)
            print(f"pba-server: {exc.code}", file=sys.stderr)
            return 2
        raise  # argparse: --help, --version, a usage error (already said)
    except KeyboardInterrupt:
        print("pba-server: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if _debug(words):
            import traceback

            traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0]
        print(
            f"pba-server: unexpected error: {type(exc).__name__}: {first}"
            + ("" if _debug(words) else " (run with --debug or PBA_DEBUG=1 for the traceback)"),
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
