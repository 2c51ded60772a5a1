"""Settings: built-in defaults, then the config file, then PBA_* environment
variables, then command-line flags (each overriding the one before)."""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_FILES = (Path("etc/pba-server.conf"), Path("/etc/pba-server/pba-server.conf"))


@dataclass(frozen=True)
class Settings:
    database: str = "sqlite:///pba-data/pba.sqlite"
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    threads: int = 16
    db_pool_size: int = 16
    max_request_bytes: int = 4 * 1024 * 1024
    secret_key: str = ""  # Fernet key; if empty, secret_key_file is used
    secret_key_file: str = "pba-data/secret.key"  # noqa: S105 - a path
    tls_port: int = 0  # 0 = no TLS listener
    tls_cert: str = ""
    tls_key: str = ""
    # the SOAP address written into the WSDL; default: the address and port the
    # connection was accepted on (never the client's Host header)
    public_url: str = ""
    request_timeout_seconds: int = 60  # a request's headers and body must arrive within this
    max_connections: int = 1000  # open connections per process; beyond, new ones are closed
    # requests without header credentials being read at once, per address and in all
    parse_concurrency_per_address: int = 2
    parse_concurrency: int = 8
    log_level: str = "INFO"
    access_log: bool = True
    auto_migrate: bool = False  # migrate an empty or behind schema at start (SQLite default)
    # outgoing e-mail (event notifications); empty smtp_host = e-mail deliveries fail and retry
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_security: str = "none"  # none | starttls | tls
    smtp_user: str = ""
    smtp_password: str = ""
    plugins_dir: str = ""  # default: the plugins/ folder next to the pba_server package
    billing_run_interval_hours: int = 24  # the billing-run job's schedule (daily)
    billing_run_workers: int = 1  # processes the scheduled billing run uses
    mail_from: str = ""  # From address when the sending account has no administrative contact
    domain_expiry_notice_days: int = 30  # domain.expiring is raised this many days before expiry
    # provisioning: retry a failed operation every N minutes; after M failures
    # it becomes a manual task; a call "running" longer than T minutes is
    # taken to have died with its process and is made again (same key)
    provisioning_retry_minutes: int = 5
    provisioning_max_failures: int = 3
    provisioning_running_timeout_minutes: int = 30
    # subscription.expiring is raised this many days before a non-auto-renewing term ends
    subscription_expiring_days: int = 14
    webhook_allow_private: bool = False  # webhooks to loopback/private/link-local addresses
    event_retention_days: int = 90  # delivered events older than this are purged (0: never)


_ENV_PREFIX = "PBA_"
_ALIASES = {"DATABASE_URL": "database"}


def _convert(name: str, value: str) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    if kind in ("int", int):
        return int(value)
    if kind in ("bool", bool):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return value


def load(
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    env = os.environ if environ is None else environ
    settings = Settings()
    names = {f.name for f in fields(Settings)}
    path = config_file or env.get("PBA_CONFIG")
    candidates = [Path(path)] if path else [p for p in DEFAULT_CONFIG_FILES if p.exists()]
    for candidate in candidates[:1]:
        if not candidate.exists():
            raise SystemExit(f"config file {candidate} not found")
        parser = configparser.ConfigParser()
        parser.read(candidate)
        if parser.has_section("server"):
            values = {k: _convert(k, v) for k, v in parser.items("server") if k in names}
            unknown = [k for k, _v in parser.items("server") if k not in names]
            if unknown:
                raise SystemExit(f"{candidate}: unknown setting(s): {', '.join(unknown)}")
            settings = replace(settings, **values)
    env_values: dict[str, Any] = {}
    for key, value in env.items():
        if not key.startswith(_ENV_PREFIX) or key == "PBA_CONFIG":
            continue
        name = _ALIASES.get(key[len(_ENV_PREFIX) :], key[len(_ENV_PREFIX) :].lower())
        if name in names:
            env_values[name] = _convert(name, value)
    settings = replace(settings, **env_values)
    if overrides:
        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    _make_sqlite_dir(settings.database)
    return settings


def _make_sqlite_dir(url: str) -> None:
    """Create the directory an SQLite file goes in (relative or absolute path)."""
    if not url.startswith("sqlite"):
        return
    from sqlalchemy.engine import make_url

    path = make_url(url).database
    if path and path != ":memory:" and not path.startswith("file:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
