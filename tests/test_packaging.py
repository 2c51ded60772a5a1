"""pba-server as an installed package: every code folder is a package, the
shipped folders (plugins/, migrations/, wsdl/) are found by import, and a
plugins folder that is missing or not a directory stops the server at start.

The wheel itself, installed outside the checkout, is tested in test_wheel.py.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from pba_server.core import resources
from pba_server.sdk import loader
from tests.serverproc import child_env, running
from tests.serverproc import cli as run_cli

ROOT = Path(__file__).resolve().parent.parent


def _code_dirs(top: Path) -> list[Path]:
    return sorted(
        d
        for d in [top, *top.rglob("*")]
        if d.is_dir() and d.name != "__pycache__" and any(d.glob("*.py"))
    )


def test_every_directory_with_python_files_under_pba_server_is_a_package():
    # setup.py's find_packages() drops a folder without __init__.py, and the
    # installed server then fails with "No module named ..."
    dirs = _code_dirs(ROOT / "pba_server")
    assert ROOT / "pba_server" / "api" in dirs  # the scan sees nested folders
    missing = [str(d.relative_to(ROOT)) for d in dirs if not (d / "__init__.py").is_file()]
    assert missing == []


@pytest.mark.parametrize("folder", ["plugins", "migrations", "wsdl"])
def test_the_shipped_folders_are_packages(folder):
    # installed as pba_server._<folder>; setuptools' editable finder only
    # maps a folder that has an __init__.py
    assert (ROOT / folder / "__init__.py").is_file()


def test_the_shipped_folders_are_found_by_import_in_this_checkout():
    """The editable install maps them to this checkout's folders (after
    changing setup.py, rerun `pip install -e .`)."""
    assert resources.builtin_plugins_dir() == ROOT / "plugins"
    assert resources.migrations_dir() == ROOT / "migrations"
    assert resources.wsdl_file() == ROOT / "wsdl" / "pba.wsdl"
    assert loader.DEFAULT_DIR == ROOT / "plugins"


def test_a_package_that_is_not_installed_is_a_clear_error():
    with pytest.raises(
        resources.MissingResource, match=re.escape("pba_server._nothing is not installed")
    ):
        resources.package_dir("pba_server._nothing")


def test_discover_refuses_a_missing_folder_or_a_file(tmp_path):
    with pytest.raises(loader.PluginFolderError, match=r"/nope does not exist$"):
        loader.discover(tmp_path / "nope", entry_points=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(loader.PluginFolderError, match=r"/file is not a directory$"):
        loader.discover(tmp_path / "file", entry_points=False)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["missing", "file"])
def test_serve_refuses_a_plugins_dir_that_is_missing_or_not_a_directory(kind, tmp_path):
    folder = tmp_path / "plugins"
    if kind == "file":
        folder.write_text("not a folder\n")
    db = tmp_path / "p.sqlite"
    with socket.socket() as taken:  # were it not refused, it would stop here, not serve
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        r = run_cli(
            "serve",
            "--database",
            f"sqlite:///{db}",
            "--port",
            str(taken.getsockname()[1]),
            cwd=tmp_path,
            env=child_env(PBA_PLUGINS_DIR=str(folder)),
            timeout=60,
        )
    what = "does not exist" if kind == "missing" else "is not a directory"
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr == f"pba-server: plugins_dir: {folder} {what}\n"
    assert "listening" not in r.stdout
    assert not db.exists()  # refused before anything was written


@pytest.mark.slow
def test_the_start_summary_counts_loaded_and_broken_plugins(tmp_path):
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "offline.py").write_text((ROOT / "plugins" / "offline.py").read_text())
    (folder / "syntax_error.py").write_text("def broken(:\n")
    env = child_env(PBA_PLUGINS_DIR=str(folder))
    with running("--database", f"sqlite:///{tmp_path / 'p.sqlite'}", cwd=tmp_path, env=env) as s:
        summary = s.wait_for_output(r"^pba-server listening on .*$").group(0)
        assert summary.endswith("plugins: 1 loaded, 1 broken)"), summary
        warning = s.wait_for_output(r"^plugin syntax_error from .* is broken: .*SyntaxError.*$")
        assert warning.start() < s.output.index(summary)  # logged at start, before serving


@pytest.mark.slow
def test_the_start_summary_counts_the_built_in_plugins(tmp_path):
    shipped = {p.stem for p in (ROOT / "plugins").glob("[!_]*.py")}
    with running("--database", f"sqlite:///{tmp_path / 'p.sqlite'}", cwd=tmp_path) as s:
        summary = s.wait_for_output(r"^pba-server listening on .*$").group(0)
        m = re.search(r"plugins: (\d+) loaded, 0 broken\)$", summary)
        assert m and int(m.group(1)) == len(shipped), summary
