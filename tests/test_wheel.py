"""The wheel runs anywhere: built from this checkout, installed into a fresh
virtualenv, and run from an empty folder outside the checkout, as a provider
installs pba-server (never from a checkout).

The wheel is built once per module from a copy of the source tree (setuptools
builds in the tree it is given; a stale build/ must not leak into the wheel).
The fresh virtualenv gets this virtualenv's site-packages on a .pth for the
dependencies (no registry is asked) and the wheel with ``--no-deps``; the
.pth adds a plain path, so this virtualenv's editable install of pba-server
is not active there (its finder is installed only by a site-packages .pth).
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import uuid
import xmlrpc.client
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.serverproc import Server, free_port, fresh_pg_database, stop, wait_ready

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = {"plugins": "_plugins", "migrations": "_migrations", "wsdl": "_wsdl"}
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    "pba-data",
    "*.sqlite",
)


@dataclass
class Installed:
    wheel: Path
    venv: Path
    tmp: Path

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)


def _version() -> str:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg["metadata"]["version"]


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120):
    r = subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return r


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of an operator's shell: nothing pointing at the checkout."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSAFEPATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBA_") and k not in drop}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=COPY_IGNORE)
    out = tmp / "dist"
    r = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
        cwd=tmp,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = out.glob("pba_server-*.whl")
    venv = tmp / "venv"
    r = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    assert r.returncode == 0, r.stderr
    vpy = str(venv / "bin" / "python")
    purelib = _run(
        [vpy, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp
    )
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib.stdout.strip(), "_pba_test_deps.pth").write_text("\n".join(sorted(ours)) + "\n")
    r = _run(
        [vpy, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        cwd=tmp,
        env=_clean_env(),
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return Installed(wheel=wheel, venv=venv, tmp=tmp)


@pytest.fixture
def empty(installed) -> Path:
    """A new empty working directory outside the checkout."""
    cwd = installed.tmp / f"run-{uuid.uuid4().hex[:8]}"
    cwd.mkdir()
    assert not cwd.is_relative_to(ROOT)
    return cwd


def test_the_wheel_carries_the_migrations_plugins_and_wsdl(installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for folder, package in SHIPPED.items():
        files = [
            p
            for p in (ROOT / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")
        ]
        assert files
        wanted = {f"pba_server/{package}/{p.relative_to(ROOT / folder).as_posix()}" for p in files}
        assert wanted - names == set(), folder
    for folder in ("tests", "scripts"):
        assert not any(n.startswith(f"{folder}/") for n in names)


def test_pba_server_resolves_to_the_installed_wheel_not_the_checkout(installed, empty):
    code = (
        "import json, importlib.metadata as m, pba_server;"
        "from pba_server.core import resources as r;"
        "print(json.dumps({'file': pba_server.__file__, 'version': m.version('pba-server'),"
        "'plugins': str(r.builtin_plugins_dir()), 'migrations': str(r.migrations_dir()),"
        "'wsdl': str(r.wsdl_file())}))"
    )
    r = _run([installed.bin("python"), "-c", code], cwd=empty, env=_clean_env())
    assert r.returncode == 0, r.stderr
    where = json.loads(r.stdout)
    site = installed.venv / "lib"
    for key in ("file", "plugins", "migrations", "wsdl"):
        assert Path(where[key]).is_relative_to(site), (key, where[key])
        assert not Path(where[key]).is_relative_to(ROOT), (key, where[key])
    assert where["version"] == _version()


@contextmanager
def serving(installed: Installed, cwd: Path, env: dict[str, str]) -> Iterator[Server]:
    port = free_port()
    log = installed.tmp / f"serve-{uuid.uuid4().hex[:8]}.log"  # not in the empty folder
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [installed.bin("pba-server"), "serve", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(proc, log, f"http://127.0.0.1:{port}")
    try:
        wait_ready(server, timeout=60)
        yield server
    finally:
        stop(proc)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_env(request) -> Iterator[dict[str, str]]:
    if request.param == "sqlite":
        yield _clean_env()  # the default: pba-data/pba.sqlite in the working directory
    else:
        with fresh_pg_database() as url:
            yield _clean_env(PBA_DATABASE_URL=url)


def test_migrate_init_serve_and_billing_run_from_an_empty_folder(installed, empty, database_env):
    pba = installed.bin("pba-server")
    env = database_env

    r = _run([pba, "migrate"], cwd=empty, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.fullmatch(r"database schema: empty -> \w+\n", r.stdout), r.stdout

    r = _run([pba, "init", "--admin-password", "wheel-Admin-pw-1"], cwd=empty, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "and admin 'admin'" in r.stdout

    shipped = {p.stem for p in (ROOT / "plugins").glob("[!_]*.py")}
    assert {"sandbox_card", "script", "stripe"} <= shipped
    with serving(installed, empty, env) as s:
        summary = s.wait_for_output(r"^pba-server listening on .*$").group(0)
        assert summary.endswith(f"plugins: {len(shipped)} loaded, 0 broken)"), summary
        host = s.base.removeprefix("http://")
        with xmlrpc.client.ServerProxy(f"http://admin:wheel-Admin-pw-1@{host}/xmlrpc") as p:
            me = p.WhoAmI({})
            listed = {x["name"]: x["status"] for x in p.PluginList({})["items"]}
        assert me["login"] == "admin" and me["account_type"] == "provider"
        assert listed == dict.fromkeys(shipped, "ok")
        assert stop(s.proc) == 0

    r = _run([pba, "billing-run", "--dry-run"], cwd=empty, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.match(r"billing run as of \d{4}-\d\d-\d\d: would bill 0 subscription", r.stdout)


def test_export_wsdl_from_an_empty_folder_writes_the_shipped_wsdl(installed, empty):
    r = _run([installed.bin("pba-server"), "export-wsdl"], cwd=empty, env=_clean_env())
    assert r.returncode == 0, r.stdout + r.stderr
    written = (empty / "wsdl" / "pba.wsdl").read_bytes()
    site = next((installed.venv / "lib").glob("python3*/site-packages"))
    assert written == (site / "pba_server" / "_wsdl" / "pba.wsdl").read_bytes()
    assert written == (ROOT / "wsdl" / "pba.wsdl").read_bytes()
