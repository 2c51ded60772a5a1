"""Configuration and command-line errors as an operator meets them: the real
``pba-server`` process, one line on stderr, exit status 2, nothing created.

Every bad setting says ``pba-server: <setting>: <what is wrong>; <what is
allowed>``; a config file that cannot be used names the file and the problem.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from pba_server import migrate
from tests.billing_support import customer
from tests.billrun_support import make_plan, subscribe
from tests.catalog_support import service_ctx
from tests.serverproc import ROOT, child_env, fresh_pg_database
from tests.serverproc import cli as run_cli

pytestmark = pytest.mark.slow

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def one_line_error(r: subprocess.CompletedProcess[str], prefix: str, code: int = 2) -> str:
    """The process failed with ``code`` and said so in one line starting ``prefix``."""
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(prefix), lines[0]
    return lines[0]


def nothing_created(cwd: Path) -> None:
    """No database, no key, no data directory: nothing started on defaults."""
    assert not (cwd / "pba-data").exists(), list((cwd / "pba-data").rglob("*"))
    assert not list(cwd.rglob("*.sqlite")), list(cwd.rglob("*.sqlite"))


def conf(tmp_path: Path, body: str, name: str = "pba.conf") -> str:
    path = tmp_path / name
    path.write_text(body)
    return str(path)


# ---------------------------------------------------------------- config files


def test_a_directory_as_config_is_refused(tmp_path):
    (tmp_path / "etc").mkdir()
    r = run_cli("serve", "--config", str(tmp_path / "etc"), cwd=tmp_path)
    line = one_line_error(r, f"pba-server: config file {tmp_path / 'etc'}: is a directory")
    assert "[server]" in line
    nothing_created(tmp_path)


def test_a_missing_config_file_is_refused(tmp_path):
    r = run_cli("serve", "--config", str(tmp_path / "nope.conf"), cwd=tmp_path)
    one_line_error(r, f"pba-server: config file {tmp_path / 'nope.conf'}: does not exist")
    nothing_created(tmp_path)


def test_pba_config_naming_a_directory_is_refused(tmp_path):
    r = run_cli("serve", cwd=tmp_path, env=child_env(PBA_CONFIG=str(tmp_path)))
    one_line_error(r, f"pba-server: config file {tmp_path}: is a directory")
    nothing_created(tmp_path)


def test_a_file_without_a_section_header_is_refused(tmp_path):
    path = conf(tmp_path, "# settings\nport = 9000\n")
    r = run_cli("serve", "--config", path, cwd=tmp_path)
    one_line_error(r, f"pba-server: config file {path}: line 2 comes before any section header")
    nothing_created(tmp_path)


@pytest.mark.parametrize("section", ["servr", "DEFAULT"])
def test_an_unknown_section_is_refused(section, tmp_path):
    path = conf(tmp_path, f"[server]\nport = 9000\n[{section}]\nthreads = 2\n")
    r = run_cli("serve", "--config", path, cwd=tmp_path)
    line = one_line_error(r, f"pba-server: config file {path}: unknown section [{section}]")
    assert line.endswith("the only section is [server]")
    nothing_created(tmp_path)


def test_a_file_with_no_server_section_is_refused(tmp_path):
    path = conf(tmp_path, "# nothing but a comment\n")
    r = run_cli("serve", "--config", path, cwd=tmp_path)
    one_line_error(r, f"pba-server: config file {path}: has no [server] section")
    nothing_created(tmp_path)


def test_an_unknown_setting_is_refused_with_a_suggestion(tmp_path):
    path = conf(tmp_path, "[server]\nprot = 9000\n")
    r = run_cli("serve", "--config", path, cwd=tmp_path)
    line = one_line_error(r, f"pba-server: config file {path}: unknown setting 'prot'")
    assert "did you mean port?" in line
    nothing_created(tmp_path)


def test_a_file_that_is_not_text_is_refused(tmp_path):
    path = tmp_path / "pba.conf"
    path.write_bytes(b"[server]\nhost = \xff\xfe\n")
    r = run_cli("serve", "--config", str(path), cwd=tmp_path)
    one_line_error(r, f"pba-server: config file {path}: is not UTF-8 text")
    nothing_created(tmp_path)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user may enter (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="pba-cli-errors-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("how", ["--config", "default location"])
def test_an_unreadable_config_file_is_refused_not_replaced_by_defaults(how, shared_dir):
    etc = shared_dir / "etc"
    etc.mkdir()
    path = etc / "pba-server.conf"
    if os.geteuid() != 0:
        path.write_text(f"[server]\ndatabase = postgresql+psycopg://pba@{'db.invalid'}/pba\n")
        path.chmod(0)
        reason = "Permission denied"
    else:
        # root reads any file whatever its mode, and may not be able to hand
        # the checkout to another user: a UNIX socket cannot be opened for
        # reading by anyone (ENXIO), which is the same "cannot be read" path
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
        reason = "No such device or address"
    args = [sys.executable, "-m", "pba_server.cli", "serve", "--port", "1"]
    if how == "--config":
        args += ["--config", str(path)]
    r = subprocess.run(
        args,
        cwd=shared_dir,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    shown = path if how == "--config" else Path("etc/pba-server.conf")
    line = one_line_error(r, f"pba-server: config file {shown}: cannot be read")
    assert reason in line
    nothing_created(shared_dir)


# ---------------------------------------------------------------- bad values

ALLOWED_PORT = "expected an integer from 1 to 65535"
ALLOWED_DB = "expected sqlite:///PATH or postgresql+psycopg://"

# (setting, how it is given, value, start of the problem, start of what is allowed)
BAD_VALUES = [
    ("database", "flag", "not a url", "'not a url' is not a database URL", ALLOWED_DB),
    ("database", "env", "mysql://db/pba", "'mysql://db/pba': mysql is not supported", ALLOWED_DB),
    (
        "database",
        "file",
        "postgres://pba:s3cret@db/pba",
        "'postgres://pba:***@db/pba' uses postgres://, which is not supported",
        ALLOWED_DB,
    ),
    (
        "database",
        "flag",
        "postgresql://db/pba",
        "'postgresql://db/pba' names no driver",
        ALLOWED_DB,
    ),
    ("port", "flag", "http", "'http' is not an integer (from --port)", ALLOWED_PORT),
    ("port", "file", "70000", "70000 is too large", ALLOWED_PORT),
    ("port", "env", "0", "0 is too small (from PBA_PORT)", ALLOWED_PORT),
    ("workers", "env", "two", "'two' is not an integer (from PBA_WORKERS)", "expected an integer"),
    ("workers", "flag", "-1", "-1 is too small", "expected an integer of at least 1"),
    (
        "threads",
        "flag",
        "0",
        "0 is too small (from --threads)",
        "expected an integer of at least 1",
    ),
    ("log_level", "env", "loud", "'loud' is not allowed", "expected one of DEBUG, INFO, WARNING"),
    ("access_log", "file", "maybe", "'maybe' is not yes or no", "expected yes or no"),
    ("auto_migrate", "env", "", "an empty value is not yes or no", "expected yes or no"),
    ("smtp_security", "file", "ssl", "'ssl' is not allowed", "expected one of none, starttls, tls"),
    (
        "tls_port",
        "file",
        "8443",
        "8443 needs tls_cert, which is not set",
        "set tls_cert and tls_key",
    ),
    ("secret_key", "env", "not-a-key", "is not a Fernet key", "expected a Fernet key"),
    ("public_url", "file", "api.example.com", "'api.example.com' is not an http", "expected an"),
    ("db_pool_size", "file", "12.5", "'12.5' is not an integer", "expected an integer"),
]


@pytest.mark.parametrize(
    ("name", "how", "value", "problem", "allowed"),
    BAD_VALUES,
    ids=[f"{v[0]}-{v[1]}-{i}" for i, v in enumerate(BAD_VALUES)],
)
def test_a_bad_value_is_one_line_naming_the_setting(name, how, value, problem, allowed, tmp_path):
    args = ["serve"]
    env = child_env()
    if how == "flag":
        args += ["--database" if name == "database" else f"--{name}", value]
    elif how == "env":
        env["PBA_DATABASE_URL" if name == "database" else f"PBA_{name.upper()}"] = value
    else:
        args += ["--config", conf(tmp_path, f"[server]\n{name} = {value}\n")]
    r = run_cli(*args, cwd=tmp_path, env=env)
    line = one_line_error(r, f"pba-server: {name}: {problem}")
    assert f"; {allowed}" in line
    if name == "secret_key" or "s3cret" in value:
        assert "s3cret" not in line and value not in line  # secrets are never echoed
    nothing_created(tmp_path)


def test_an_sqlite_path_that_cannot_be_created(tmp_path):
    (tmp_path / "data").write_text("a file, not a directory")
    url = f"sqlite:///{tmp_path / 'data' / 'db' / 'pba.sqlite'}"
    r = run_cli("serve", "--database", url, cwd=tmp_path)
    line = one_line_error(
        r, f"pba-server: database: cannot create the directory {tmp_path}/data/db"
    )
    assert "expected an SQLite file in a directory" in line
    nothing_created(tmp_path)


def test_the_tls_certificate_must_be_readable(tmp_path):
    path = conf(
        tmp_path,
        f"[server]\ntls_port = 8443\ntls_cert = {tmp_path / 'missing.crt'}\n"
        f"tls_key = {tmp_path / 'missing.key'}\n",
    )
    r = run_cli("serve", "--config", path, cwd=tmp_path)
    one_line_error(r, f"pba-server: tls_cert: cannot read {tmp_path / 'missing.crt'}")
    nothing_created(tmp_path)


@pytest.mark.parametrize(
    ("args", "prefix"),
    [
        (("--workers", "0"), "pba-server: --workers: 0 is too small"),
        (("--batch-size", "many"), "pba-server: --batch-size: 'many' is not an integer"),
        (("--account", "-3"), "pba-server: --account: -3 is too small"),
        (("--as-of", "2026-13-01"), "pba-server: --as-of: '2026-13-01' is not a date"),
        (("--progress-interval", "soon"), "pba-server: progress_interval_seconds: 'soon'"),
    ],
    ids=lambda v: v[0] if isinstance(v, tuple) else "",
)
def test_bad_billing_run_arguments(args, prefix, tmp_path):
    r = run_cli("billing-run", *args, cwd=tmp_path)
    one_line_error(r, prefix)
    nothing_created(tmp_path)


def test_a_usage_mistake_is_one_line_too(tmp_path):
    r = run_cli("serve", "--prot", "9000", cwd=tmp_path)
    one_line_error(r, "pba-server: unrecognized arguments: --prot 9000")
    nothing_created(tmp_path)


def test_config_check_shows_the_settings_without_secrets(tmp_path):
    key = "A" * 43 + "="  # 32 bytes, url-safe base64
    path = conf(tmp_path, "[server]\nport = 9100\nsmtp_password = hunter2-secret\n")
    r = run_cli(
        "config",
        "check",
        "--config",
        path,
        cwd=tmp_path,
        env=child_env(PBA_SECRET_KEY=key, PBA_DATABASE_URL="postgresql+psycopg://u:pw@h/d"),
    )
    assert r.returncode == 0, r.stderr
    assert f"config file: {path}" in r.stdout
    assert "  port = 9100" in r.stdout
    assert "smtp_password = (set; not shown)" in r.stdout
    assert "secret_key = (set; not shown)" in r.stdout
    assert "database = postgresql+psycopg://u:***@h/d" in r.stdout
    assert key not in r.stdout and "hunter2" not in r.stdout and ":pw@" not in r.stdout
    nothing_created(tmp_path)


# ---------------------------------------------------------------- unexpected errors


def test_an_unexpected_error_is_one_line_and_exit_1_traceback_only_with_debug(tmp_path):
    (tmp_path / "out").write_text("a file where a directory is wanted")
    args = ("export-wsdl", "--output", str(tmp_path / "out" / "pba.wsdl"))
    r = run_cli(*args, cwd=tmp_path)
    line = one_line_error(r, "pba-server: unexpected error: ", code=1)
    assert "--debug" in line
    for debug in (("--debug", *args), args):
        env = child_env(PBA_DEBUG="1") if debug is args else child_env()
        d = run_cli(*debug, cwd=tmp_path, env=env)
        assert d.returncode == 1
        assert "Traceback (most recent call last)" in d.stderr
        assert d.stderr.strip().splitlines()[-1].startswith("pba-server: unexpected error: ")


# ---------------------------------------------------------------- --version, --help


def test_version_comes_from_the_package_metadata(tmp_path):
    from importlib import metadata

    r = run_cli("--version", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"pba-server {metadata.version('pba-server')}"


def test_top_level_help_says_what_the_program_is(tmp_path):
    r = run_cli("--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "headless business automation" in r.stdout
    assert "The ``pba-server`` command" not in r.stdout  # not the module's docstring


def test_serve_help_lists_every_setting_from_the_table(tmp_path):
    from pba_server.config import SETTINGS

    r = run_cli("serve", "--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for spec in SETTINGS:
        assert f"  {spec.name} ({spec.env}; default " in r.stdout, spec.name
    assert "expected" not in r.stdout.split("settings (")[0]
    assert "--port PORT" in r.stdout and "1 to 65535" in r.stdout


# ---------------------------------------------------------------- the listening line


@pytest.mark.parametrize("workers", ["1", "2"])
def test_no_listening_line_when_the_port_cannot_be_bound(workers, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = run_cli(
            "serve",
            "--database",
            f"sqlite:///{tmp_path / 'p.sqlite'}",
            "--port",
            str(port),
            "--workers",
            workers,
            cwd=tmp_path,
            timeout=60,
        )
    assert r.returncode == 2, r.stdout + r.stderr
    assert "listening" not in r.stdout
    one_line_error(r, f"pba-server: cannot listen on 127.0.0.1:{port}: Address already in use")


# ---------------------------------------------------------------- unmigrated databases


def _previous_revision() -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config())
    head = script.get_revision(migrate.head_revision())
    assert head is not None and isinstance(head.down_revision, str)
    return head.down_revision


@pytest.fixture(params=["sqlite", "postgresql"])
def older_schema(request, tmp_path) -> Iterator[str]:
    """A database migrated to the revision before the newest."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.sqlite'}"
        m = run_cli("migrate", "--database", url, "--revision", _previous_revision(), cwd=tmp_path)
        assert m.returncode == 0, m.stderr
        yield url
    else:
        with fresh_pg_database() as url:
            m = run_cli(
                "migrate", "--database", url, "--revision", _previous_revision(), cwd=tmp_path
            )
            assert m.returncode == 0, m.stderr
            yield url


@pytest.mark.parametrize("command", [("billing-run",), ("verify-ledger",), ("init",)])
def test_commands_on_an_older_schema_say_run_migrate(command, older_schema, tmp_path):
    r = run_cli(*command, "--database", older_schema, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith(
        f"pba-server: the database schema is behind (at {_previous_revision()}"
    )
    assert "pba-server migrate --database" in r.stderr


@pytest.mark.parametrize("command", ["billing-run", "verify-ledger"])
def test_commands_on_no_database_say_run_migrate_and_create_nothing(command, tmp_path):
    r = run_cli(command, cwd=tmp_path)  # the default sqlite:///pba-data/pba.sqlite
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("pba-server: the database schema is empty")
    assert "pba-server migrate --database 'sqlite:///pba-data/pba.sqlite'" in r.stderr
    nothing_created(tmp_path)


# ---------------------------------------------------------------- progress off a terminal


def _progress_lines(stderr: str, what: str) -> list[re.Match[str]]:
    pattern = rf"^{STAMP} {what}: (?P<done>\d+)/(?P<total>\d+) \S+ \((?P<pct>\d+)%\), .*/s, "
    return [m for line in stderr.splitlines() if (m := re.match(pattern, line))]


def test_migrate_logs_a_progress_line_per_revision_off_a_terminal(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    r = run_cli("migrate", "--database", url, "--progress-interval", "0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    from alembic.script import ScriptDirectory

    revisions = list(ScriptDirectory.from_config(migrate.alembic_config()).walk_revisions())
    lines = _progress_lines(r.stderr, "migrate")
    assert [int(m["done"]) for m in lines] == list(range(1, len(revisions) + 1)), r.stderr
    assert {int(m["total"]) for m in lines} == {len(revisions)}
    assert "100%" in lines[-1].group(0) and "done in" in r.stderr.splitlines()[-1]
    assert f"now at {migrate.head_revision()}" in r.stderr.splitlines()[-1]
    assert "\r" not in r.stderr  # no terminal: no redrawn line
    assert r.stdout.strip() == f"database schema: empty -> {migrate.head_revision()}"


def test_billing_run_logs_progress_lines_off_a_terminal(env: Any) -> None:
    cat = make_plan(env)
    with service_ctx(env) as ctx:
        prov = ctx.principal.account_id
    for i in range(3):
        c = customer(env, f"Progress {i}", country=None)
        subscribe(env, cat, c, prov, date(2026, 2, 10))
    url = env.app.engine.url.render_as_string(hide_password=False)
    r = run_cli(
        "billing-run",
        "--database",
        url,
        "--as-of",
        "2026-03-10",
        "--batch-size",
        "1",
        "--progress-interval",
        "0",
        "--json",
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["invoices"] == 3  # stdout: the summary alone
    lines = _progress_lines(r.stderr, "billing run")
    assert [(int(m["done"]), int(m["total"])) for m in lines] == [(1, 3), (2, 3), (3, 3)], r.stderr
    assert "3 invoice(s)" in lines[-1].string and "done in" in lines[-1].string
