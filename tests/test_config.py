"""Settings: defaults, then the config file, then PBA_* environment, then flags."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from pba_server import config
from pba_server.config import Settings

ROOT = Path(__file__).resolve().parent.parent


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
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(str(tmp_path / "missing.conf"), environ={})


def test_unknown_setting_in_file_is_an_error(tmp_path):
    conf = write(tmp_path / "c.conf", "prot = 1\n")
    with pytest.raises(config.ConfigError, match="unknown setting 'prot'"):
        config.load(conf, environ={})


def test_sqlite_directory_is_created_for_relative_and_absolute_paths(tmp_path):
    config.load(None, {"database": "sqlite:///rel/dir/x.sqlite"}, environ={})
    assert (tmp_path / "rel" / "dir").is_dir()
    absolute = tmp_path / "abs" / "dir" / "y.sqlite"
    config.load(None, {"database": f"sqlite:///{absolute}"}, environ={})
    assert absolute.parent.is_dir()
    config.load(None, {"database": "sqlite://"}, environ={})  # in memory: nothing to create


def test_flags_and_environment_are_converted_and_checked_like_the_file():
    s = config.load(None, {"port": "9003", "workers": 2}, environ={"PBA_LOG_LEVEL": "debug"})
    assert (s.port, s.workers, s.log_level) == (9003, 2, "DEBUG")  # choices are normalized
    with pytest.raises(config.ConfigError) as e:
        config.load(None, {"port": True}, environ={})  # a bool is not a port
    assert e.value.setting == "port"


def test_every_setting_has_a_row_with_a_default_of_its_type():
    assert [s.name for s in config.SETTINGS] == [f.name for f in fields(Settings)]
    for spec in config.SETTINGS:
        assert spec.help and spec.allowed()
        assert type(spec.default) is spec.kind, spec.name
        # the default passes its own checks, as text too (the example file's value)
        assert config.convert(spec, spec.default) == spec.default
        assert config.convert(spec, config.format_value(spec, spec.default)) == spec.default
        if spec.example:
            config.convert(spec, spec.example)


def test_the_example_config_is_generated_from_the_table():
    committed = (ROOT / "etc" / "pba-server.conf.example").read_text()
    assert committed == config.example_config(), "run scripts/gen_settings_docs.py"


def test_the_example_config_loads_and_means_the_defaults(tmp_path):
    path = tmp_path / "example.conf"
    path.write_text(config.example_config())
    assert config.load(str(path), environ={}) == Settings()
    # uncommenting the default lines (those not showing an example) changes nothing
    defaults = tuple(f"# {s.name} =" for s in config.SETTINGS if not s.example)
    lines = config.example_config().splitlines()
    path.write_text("\n".join(ln[2:] if ln.startswith(defaults) else ln for ln in lines))
    assert config.load(str(path), environ={}) == Settings()
    assert sum(ln.startswith(defaults) for ln in lines) == len(defaults)


def test_the_readme_settings_table_is_generated_from_the_table():
    readme = (ROOT / "README.md").read_text()
    assert config.markdown_table() in readme, "run scripts/gen_settings_docs.py"
    for spec in config.SETTINGS:
        assert f"| `{spec.name}`" in readme
