"""Settings: defaults, then the config file, then PBA_* environment, then flags."""

from __future__ import annotations

import pytest

from pba_server import config
from pba_server.config import Settings


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    # load() looks for etc/pba-server.conf and creates SQLite directories,
    # both relative to the working directory
    monkeypatch.chdir(tmp_path)


def write(path, body: str):
    path.write_text("[server]\n" + body)
    return str(path)


def test_defaults_without_file_env_or_flags():
    s = config.load(None, None, environ={})
    assert s == Settings()
    assert s.database == "sqlite:///pba-data/pba.sqlite"
    assert (s.host, s.port, s.workers) == ("127.0.0.1", 8080, 1)


def test_config_file_then_env_then_flags(tmp_path):
    conf = write(
        tmp_path / "a.conf",
        "database = postgresql+psycopg://file@db/pba\nport = 9001\nhost = 0.0.0.0\n"
        "workers = 3\naccess_log = no\n",
    )
    from_file = config.load(conf, environ={})
    assert from_file.database == "postgresql+psycopg://file@db/pba"
    assert (from_file.port, from_file.host, from_file.workers) == (9001, "0.0.0.0", 3)
    assert from_file.access_log is False

    env = {"PBA_DATABASE_URL": "postgresql+psycopg://env@db/pba", "PBA_PORT": "9002"}
    from_env = config.load(conf, environ=env)
    assert from_env.database == "postgresql+psycopg://env@db/pba"
    assert from_env.port == 9002
    assert from_env.host == "0.0.0.0" and from_env.workers == 3  # still from the file

    flags = {"database": "postgresql+psycopg://flag@db/pba", "port": None, "workers": 2}
    from_flags = config.load(conf, flags, environ=env)
    assert from_flags.database == "postgresql+psycopg://flag@db/pba"
    assert from_flags.port == 9002  # a flag not given does not override
    assert from_flags.workers == 2


def test_env_names_settings_and_config_file(tmp_path):
    conf = write(tmp_path / "b.conf", "threads = 5\n")
    s = config.load(
        None,
        environ={
            "PBA_CONFIG": conf,
            "PBA_WORKERS": "4",
            "PBA_AUTO_MIGRATE": "true",
            "PBA_SOMETHING_ELSE": "ignored",
        },
    )
    assert (s.threads, s.workers, s.auto_migrate) == (5, 4, True)


def test_default_config_file_in_etc(tmp_path):
    (tmp_path / "etc").mkdir()
    write(tmp_path / "etc" / "pba-server.conf", "port = 9100\n")
    assert config.load(environ={}).port == 9100


def test_explicit_config_file_must_exist(tmp_path):
    with pytest.raises(SystemExit, match="not found"):
        config.load(str(tmp_path / "missing.conf"), environ={})


def test_unknown_setting_in_file_is_an_error(tmp_path):
    conf = write(tmp_path / "c.conf", "prot = 1\n")
    with pytest.raises(SystemExit, match="unknown setting"):
        config.load(conf, environ={})


def test_sqlite_directory_is_created_for_relative_and_absolute_paths(tmp_path):
    config.load(None, {"database": "sqlite:///rel/dir/x.sqlite"}, environ={})
    assert (tmp_path / "rel" / "dir").is_dir()
    absolute = tmp_path / "abs" / "dir" / "y.sqlite"
    config.load(None, {"database": f"sqlite:///{absolute}"}, environ={})
    assert absolute.parent.is_dir()
    config.load(None, {"database": "sqlite://"}, environ={})  # in memory: nothing to create
