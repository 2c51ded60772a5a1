"""The ``pba-server`` command."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from pba_server import config

# relative to the working directory: an installed package has no source tree to write into
WSDL_PATH = Path("wsdl") / "pba.wsdl"
WSDL_LOCATION = "http://127.0.0.1:8080/soap"


def _db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--database",
        metavar="URL",
        help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db "
        "(default: PBA_DATABASE_URL, then the config file, then "
        "sqlite:///pba-data/pba.sqlite)",
    )
    p.add_argument("--config", metavar="FILE", help="config file (default: etc/pba-server.conf)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="pba-server", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "serve",
        help="run the SOAP + XML-RPC server",
        description="Run the server. On first start of an empty SQLite "
        "database it is created, migrated and initialized (the generated "
        "admin password is printed once).",
    )
    _db_arg(s)
    s.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port to listen on (default 8080)")
    s.add_argument("--workers", type=int, help="worker processes sharing the port (default 1)")
    s.add_argument("--threads", type=int, help="threads serving calls in each worker")
    s.add_argument("--worker-fds", help=argparse.SUPPRESS)

    m = sub.add_parser(
        "migrate",
        help="apply database migrations",
        description="Apply the Alembic migrations in migrations/ up to the newest (or --revision).",
    )
    _db_arg(m)
    m.add_argument("--revision", default="head")

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
        "bills twice. Prints a progress bar on a terminal and a summary at the end.",
    )
    _db_arg(b)
    b.add_argument("--as-of", metavar="YYYY-MM-DD", help="bill what is due by this date")
    b.add_argument(
        "--dry-run", action="store_true", help="show the invoices it would issue; write nothing"
    )
    b.add_argument("--account", type=int, metavar="ID", help="only this account's subtree")
    b.add_argument("--workers", type=int, default=1, help="processes claiming batches side by side")
    b.add_argument("--batch-size", type=int, default=500, help="customers per transaction")
    b.add_argument("--json", action="store_true", help="print the summary as JSON")

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
    return ap


def _settings(args: argparse.Namespace, **extra: Any) -> config.Settings:
    overrides = {"database": getattr(args, "database", None), **extra}
    return config.load(getattr(args, "config", None), overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    from pba_server import bootstrap
    from pba_server.accounts import setup

    settings = _settings(
        args, host=args.host, port=args.port, workers=args.workers, threads=args.threads
    )
    bootstrap.configure_logging(settings.log_level, access_log=settings.access_log)
    if args.worker_fds:
        from pba_server.api import serve

        app = bootstrap.build_app(settings, check=False)
        serve.run_worker(app, [int(x) for x in args.worker_fds.split(",")])
        return 0
    from pba_server.sdk import loader

    try:
        app = bootstrap.build_app(settings)
    except bootstrap.SchemaNotCurrent as exc:
        print(f"pba-server: {exc}", file=sys.stderr)
        return 2
    except loader.PluginFolderError as exc:
        print(f"pba-server: plugins_dir: {exc}", file=sys.stderr)
        return 2
    if not setup.provider_exists(app.engine):
        result = setup.initialize(app.engine, app.clock, app.secrets)
        print("First start: created the provider account and an admin user.")
        print(f"  login:    {result.admin_login}")
        print(f"  password: {result.admin_password}   (shown only this once)")
    base = f"http://{settings.host}:{settings.port}"
    plugins = loader.plugins().values()
    broken = sum(p.status == "broken" for p in plugins)
    print(
        f"pba-server listening on {base} ({settings.workers} worker(s), database "
        f"{app.engine.url.render_as_string(hide_password=True)}, plugins: "
        f"{len(plugins) - broken} loaded, {broken} broken)"
    )
    print(f"  SOAP:    {base}/soap   WSDL: {base}/soap?wsdl")
    print(f"  XML-RPC: {base}/xmlrpc")
    print(f"  health:  {base}/health")
    if settings.tls_port:
        print(f"  TLS:     https://{settings.host}:{settings.tls_port}/soap")
    sys.stdout.flush()
    from pba_server.api import serve

    try:
        if settings.workers > 1:
            app.engine.dispose()
            argv = [a for a in sys.argv[1:]]
            return serve.run_master(
                argv, settings.workers, settings.host, settings.port, settings.tls_port
            )
        serve.run_worker(app)
    except serve.ListenError as exc:
        print(f"pba-server: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from pba_server import migrate
    from pba_server.core.db import make_engine

    settings = _settings(args)
    engine = make_engine(settings.database)
    before = migrate.current_revision(engine)
    migrate.upgrade(engine, args.revision)
    after = migrate.current_revision(engine)
    print(f"database schema: {before or 'empty'} -> {after}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from pba_server import bootstrap, migrate
    from pba_server.accounts import setup
    from pba_server.core.clock import SystemClock
    from pba_server.core.db import make_engine
    from pba_server.core.errors import PbaError

    settings = _settings(args)
    engine = make_engine(settings.database)
    state, _cur, _head = migrate.schema_state(engine)
    if state == "empty":
        migrate.upgrade(engine)
    elif state != "current":
        advice = "upgrade pba-server" if state == "ahead" else "run pba-server migrate first"
        print(f"pba-server: the database schema is {state}; {advice}", file=sys.stderr)
        return 2
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
    from pba_server.core.db import UnitOfWork, make_engine

    settings = _settings(args)
    engine = make_engine(settings.database)
    with UnitOfWork(engine) as uow:
        problems = ledger.verify(uow.session)
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

    from pba_server.billing import run as billing_run
    from pba_server.core.clock import SystemClock
    from pba_server.core.db import make_engine
    from pba_server.core.errors import PbaError

    try:
        as_of = date.fromisoformat(args.as_of) if args.as_of else None
    except ValueError:
        print(f"pba-server: --as-of {args.as_of!r} is not a date (YYYY-MM-DD)", file=sys.stderr)
        return 2
    if args.workers < 1 or args.batch_size < 1:
        print("pba-server: --workers and --batch-size must be at least 1", file=sys.stderr)
        return 2
    settings = _settings(args)
    engine = make_engine(settings.database, pool_size=max(2, args.workers))
    clock = SystemClock()
    day = as_of or clock.now().date()
    tty = sys.stdout.isatty()
    due = billing_run.due_count(engine, day, args.account) if tty else 0

    def bar(s: billing_run.RunSummary) -> None:
        if not tty or not due:
            return
        done = min(s.subscriptions, due)
        width = 30
        fill = int(width * done / due)
        sys.stdout.write(
            f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{due} subscriptions, "
            f"{s.invoices} invoices"
        )
        sys.stdout.flush()

    try:
        summary = billing_run.run(
            engine,
            clock,
            as_of=day,
            dry_run=args.dry_run,
            account_id=args.account,
            workers=args.workers,
            batch_size=args.batch_size,
            progress=bar,
        )
    except PbaError as exc:
        print(f"pba-server: {exc.message}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    if tty and due:
        sys.stdout.write("\n")
    if args.dry_run and not args.json:
        for d in summary.drafts:
            print(f"invoice to account {d.account_id} from {d.issuer_id}: {d.total} {d.currency}")
            for ln in d.lines:
                print(f"  {ln.description}: {ln.quantity} x {ln.unit_price} = {ln.total}")
    print(billing_run.summary_json(summary) if args.json else summary.line())
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


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    handler = {
        "serve": cmd_serve,
        "migrate": cmd_migrate,
        "init": cmd_init,
        "export-wsdl": cmd_export_wsdl,
        "export-roles": cmd_export_roles,
        "verify-ledger": cmd_verify_ledger,
        "billing-run": cmd_billing_run,
    }[args.command]
    from sqlalchemy.exc import DBAPIError

    try:
        return handler(args)
    except DBAPIError as exc:
        # an operator's mistake (wrong URL, database down): one line, no traceback
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        print(f"pba-server: cannot use the database: {reason}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
