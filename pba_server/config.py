"""Settings: built-in defaults, then the config file, then PBA_* environment
variables, then command-line flags (each overriding the one before).

The :class:`Settings` dataclass is the one table of settings: each field
declares its type (the annotation), default, allowed values and description
(:func:`setting`). Parsing and validation (:func:`load`), ``pba-server serve
--help``, ``etc/pba-server.conf.example`` (:func:`example_config`) and the
README's settings table (:func:`markdown_table`) are all made from it, so
they cannot drift. Every bad value is a :class:`ConfigError`, which the
command line turns into one line and exit status 2.
"""

from __future__ import annotations

import base64
import binascii
import configparser
import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

DEFAULT_CONFIG_FILES = (Path("etc/pba-server.conf"), Path("/etc/pba-server/pba-server.conf"))
SECTION = "server"

T = TypeVar("T")


class ConfigError(Exception):
    """A setting (or the config file) is wrong: ``<setting>: <problem>; <allowed>``.

    Not a ValueError: argparse would swallow it from a type function.
    """

    def __init__(self, setting: str, problem: str, allowed: str) -> None:
        self.setting = setting
        self.problem = problem
        self.allowed = allowed
        super().__init__(f"{setting}: {problem}; {allowed}")


@dataclass(frozen=True)
class Spec:
    """One row of the settings table."""

    name: str
    kind: type  # str, int or bool
    default: Any
    help: str
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()
    allowed_text: str = ""  # overrides the allowed values derived from kind/range/choices
    secret: bool = False  # never echoed: not in errors, not in `config check`
    example: str = ""  # a value to show (commented out) in the example config
    group: str = ""  # starts a group in the example config: its heading
    flag: bool = False  # `pba-server serve --<name>` sets it
    check: Callable[[Any], str | None] | None = None  # further checks: the problem, or None

    @property
    def env(self) -> str:
        return "PBA_DATABASE_URL" if self.name == "database" else f"PBA_{self.name.upper()}"

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    def allowed(self) -> str:
        if self.allowed_text:
            return self.allowed_text
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.kind is bool:
            return "yes or no (also true/false, on/off, 1/0)"
        if self.kind is int:
            if self.minimum is not None and self.maximum is not None:
                return f"an integer from {self.minimum} to {self.maximum}"
            if self.minimum is not None:
                return f"an integer of at least {self.minimum}"
            return "an integer"
        return "any text"

    def shown_default(self) -> str:
        return format_value(self, self.default)


def setting(
    default: T,
    help: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    choices: tuple[str, ...] = (),
    allowed: str = "",
    secret: bool = False,
    example: str = "",
    group: str = "",
    flag: bool = False,
    check: Callable[[Any], str | None] | None = None,
) -> T:
    """A field of :class:`Settings` with its row of the settings table."""
    spec = {
        "help": help,
        "minimum": minimum,
        "maximum": maximum,
        "choices": choices,
        "allowed_text": allowed,
        "secret": secret,
        "example": example,
        "group": group,
        "flag": flag,
        "check": check,
    }
    return field(default=default, metadata={"spec": spec})


# ---------------------------------------------------------------- checks of single values

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
DATABASE_ALLOWED = "sqlite:///PATH or postgresql+psycopg://USER[:PASSWORD]@HOST[:PORT]/DBNAME"


def mask_url(value: str) -> str:
    """A URL with any password replaced (it goes into error messages and logs)."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", value)


def _check_database(value: str) -> str | None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    shown = mask_url(value)
    if not value.strip():
        return "is empty"
    scheme = value.split(":", 1)[0].lower() if "://" in value else ""
    if scheme == "postgres":
        return f"{shown!r} uses postgres://, which is not supported"
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        return f"{shown!r} is not a database URL"
    if url.drivername in ("sqlite", "sqlite+pysqlite"):
        return None
    if url.drivername == "postgresql+psycopg":
        if not url.host and not url.query.get("host"):
            return f"{shown!r} names no host"
        return None
    if url.drivername == "postgresql":
        return f"{shown!r} names no driver"
    return f"{shown!r}: {url.drivername} is not supported"


def _check_fernet_key(value: str) -> str | None:
    if not value:
        return None
    try:
        raw = base64.urlsafe_b64decode(value.encode())
    except (binascii.Error, ValueError):
        raw = b""
    return None if len(raw) == 32 else "is not a Fernet key"


def _check_public_url(value: str) -> str | None:
    if value and not re.match(r"https?://[^/\s]+", value):
        return f"{value!r} is not an http:// or https:// URL"
    return None


def _check_networks(value: str) -> str | None:
    import ipaddress

    for part in (x.strip() for x in value.split(",")):
        if not part:
            continue
        try:
            ipaddress.ip_network(part, strict=False)
        except ValueError:
            return f"{part!r} is not a network"
    return None


def _check_not_empty(value: str) -> str | None:
    return "is empty" if not value.strip() else None


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Settings:
    database: str = setting(
        "sqlite:///pba-data/pba.sqlite",
        "the database (SQLAlchemy URL); SQLite for trying it out, PostgreSQL in production",
        allowed=DATABASE_ALLOWED,
        example="postgresql+psycopg://pba@127.0.0.1:5432/pba",
        group="database and listener",
        check=_check_database,
    )
    host: str = setting(
        "127.0.0.1",
        "address to listen on (0.0.0.0: every IPv4 interface)",
        allowed="an IP address or host name",
        flag=True,
        check=_check_not_empty,
    )
    port: int = setting(8080, "port to listen on", minimum=1, maximum=65535, flag=True)
    workers: int = setting(
        1, "worker processes sharing the port (about one per core)", minimum=1, flag=True
    )
    threads: int = setting(16, "threads serving calls in each worker", minimum=1, flag=True)
    db_pool_size: int = setting(
        16, "database connections each worker's API pool keeps open", minimum=1
    )
    db_max_overflow: int = setting(
        8,
        "connections an API pool may open beyond db_pool_size under a burst, closed again "
        "when returned",
        minimum=0,
    )
    db_pool_timeout_seconds: int = setting(
        30,
        "longest wait for a free pooled connection before a call is answered Server.Unavailable",
        minimum=1,
    )
    db_pool_recycle_seconds: int = setting(
        1800, "a pooled connection older than this is replaced before use", minimum=60
    )
    db_pool_idle_seconds: int = setting(
        300,
        "a pooled connection unused this long is closed, so idle servers give their "
        "connections back (0: kept open)",
        minimum=0,
    )
    db_connection_share: int = setting(
        80,
        "percent of PostgreSQL's max_connections the server may take (all workers, "
        "background threads and billing-run workers); a warning at start when the "
        "settings add up to more",
        minimum=1,
        maximum=100,
    )
    db_retry_attempts: int = setting(
        3,
        "attempts of a unit of work that hit a deadlock, serialization failure or a locked "
        "SQLite database before the caller is answered Server.Busy",
        minimum=1,
        maximum=10,
    )
    max_request_bytes: int = setting(
        4 * 1024 * 1024, "largest request body accepted (bytes)", minimum=1024
    )
    tls_port: int = setting(
        0,
        "port of a TLS listener next to the plain one (needs tls_cert and tls_key)",
        minimum=0,
        maximum=65535,
        allowed="0 (no TLS listener) or a port from 1 to 65535",
        example="8443",
        group="TLS",
    )
    tls_cert: str = setting(
        "",
        "PEM certificate file of the TLS listener (may hold the whole chain, leaf first)",
        allowed="a readable PEM file",
        example="/etc/pba-server/server.crt",
    )
    tls_key: str = setting(
        "",
        "PEM private key file of the TLS listener",
        allowed="a readable PEM file",
        example="/etc/pba-server/server.key",
    )
    public_url: str = setting(
        "",
        "the SOAP address written into the WSDL (default: the address and port the "
        "connection was accepted on, never the client's Host header)",
        allowed="an http:// or https:// URL",
        example="https://api.example.com/soap",
        check=_check_public_url,
    )
    request_timeout_seconds: int = setting(
        60, "a request's headers and body must arrive within this many seconds", minimum=1
    )
    max_connections: int = setting(
        1000, "open connections per process; beyond it new ones are closed", minimum=1
    )
    parse_concurrency_per_address: int = setting(
        2, "requests without header credentials read at once from one address", minimum=1
    )
    parse_concurrency: int = setting(
        8, "requests without header credentials read at once in all", minimum=1
    )
    secret_key: str = setting(
        "",
        "Fernet key that encrypts API secrets at rest; if empty, secret_key_file is used",
        allowed="a Fernet key (32 url-safe base64-encoded bytes), or empty",
        secret=True,
        group="secrets at rest",
        check=_check_fernet_key,
    )
    secret_key_file: str = setting(
        "pba-data/secret.key",
        "file holding the Fernet key, created on first start: keep it, and keep it out of "
        "database backups",
        allowed="a file path",
    )
    log_level: str = setting(
        "INFO",
        "how much the server logs",
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        group="logging",
    )
    access_log: bool = setting(True, "one log line per request")
    auto_migrate: bool = setting(
        False,
        "migrate a PostgreSQL schema that is empty or behind at start instead of refusing "
        "(SQLite always is)",
        group="schema",
    )
    smtp_host: str = setting(
        "",
        "mail server for e-mail notifications (empty: e-mail deliveries fail and are retried)",
        allowed="a host name or address, or empty",
        example="mail.example.com",
        group="outgoing e-mail (event notifications)",
    )
    smtp_port: int = setting(25, "mail server port", minimum=1, maximum=65535, example="587")
    smtp_security: str = setting(
        "none",
        "none, STARTTLS after connecting, or TLS from the start",
        choices=("none", "starttls", "tls"),
        example="starttls",
    )
    smtp_user: str = setting("", "mail server login (empty: no login)")
    smtp_password: str = setting("", "mail server password", secret=True)
    mail_from: str = setting(
        "",
        "From address when the sending account has no administrative contact",
        allowed="an e-mail address, or empty",
        example="billing@example.com",
    )
    plugins_dir: str = setting(
        "",
        "folder plugins are loaded from, besides installed entry points (default: the "
        "built-in plugins shipped with pba-server; a folder that does not exist or is not "
        "a directory refuses to start)",
        allowed="a folder path, or empty",
        example="/opt/pba-plugins",
        group="plugins",
    )
    plugin_threads: int = setting(
        4,
        "threads per plugin instance; more calls to one instance wait for one, within "
        "their deadline",
        minimum=1,
        maximum=64,
    )
    plugin_wait_percent: int = setting(
        50,
        "share of `threads` (percent) that may wait on plugin calls at once; a call "
        "beyond it is not made and fails at once (outcome known: nothing was sent)",
        minimum=1,
        maximum=100,
    )
    plugin_breaker_failures: int = setting(
        5,
        "consecutive failures or timeouts of one plugin instance that open its circuit "
        "breaker: calls fail at once until the cool-down ends",
        minimum=1,
    )
    plugin_breaker_cooldown_seconds: int = setting(
        30,
        "how long an open circuit breaker refuses calls before one trial call",
        minimum=1,
    )
    billing_run_interval_hours: int = setting(
        24, "hours between scheduled billing runs (24: daily)", minimum=1, group="billing run"
    )
    billing_run_workers: int = setting(1, "processes the scheduled billing run uses", minimum=1)
    progress_interval_seconds: int = setting(
        10,
        "when not on a terminal, `billing-run` and `migrate` log a progress line this often "
        "(0: after every step)",
        minimum=0,
    )
    domain_expiry_notice_days: int = setting(
        30,
        "domain.expiring is raised this many days before a domain expires",
        minimum=0,
        group="domains and subscriptions",
    )
    subscription_expiring_days: int = setting(
        14,
        "subscription.expiring is raised this many days before a non-renewing term ends",
        minimum=0,
    )
    provisioning_retry_minutes: int = setting(
        5,
        "a failed provisioning operation is retried every this many minutes",
        minimum=1,
        group="provisioning",
    )
    provisioning_max_failures: int = setting(
        3, "after this many failures an operation becomes a manual task", minimum=1
    )
    provisioning_running_timeout_minutes: int = setting(
        30,
        "upper bound for a call still running while its worker lives (renewing its lease): "
        "past it the call is made again (same key); a worker that died is noticed within "
        "15 s, when its lease runs out",
        minimum=1,
    )
    outbound_allowed_networks: str = setting(
        "",
        "networks that webhooks and plugins may reach although private, e.g. a registry or "
        "panel on the internal network; everything else private is refused",
        allowed="comma-separated networks (10.20.0.0/16, ::1/128), or empty",
        example="10.20.0.0/16",
        group="events",
        check=_check_networks,
    )
    webhook_allow_private: bool = setting(
        False,
        "allow webhooks and plugins to reach every address, loopback, private and "
        "link-local too (SSRF risk: trusted setups only)",
        group="events",
    )
    event_retention_days: int = setting(
        90, "delivered events older than this are purged (0: kept forever)", minimum=0
    )
    idempotency_retention_days: int = setting(
        7,
        "idempotency keys (and the first answers they replay) are kept this many days",
        minimum=1,
    )


_KINDS: dict[str, type] = {"str": str, "int": int, "bool": bool}


def _spec(f: Any) -> Spec:
    kind = f.type if isinstance(f.type, type) else _KINDS[str(f.type)]
    return Spec(name=f.name, kind=kind, default=f.default, **f.metadata["spec"])


SETTINGS: tuple[Spec, ...] = tuple(_spec(f) for f in fields(Settings))
SPECS: dict[str, Spec] = {s.name: s for s in SETTINGS}


# ---------------------------------------------------------------- converting values


def format_value(spec: Spec, value: Any) -> str:
    """A value as written in the config file."""
    if spec.kind is bool:
        return "yes" if value else "no"
    return str(value)


def _shown(spec: Spec, raw: str) -> str:
    if spec.secret:
        return "the value"
    return repr(raw) if raw.strip() else "an empty value"


def convert(spec: Spec, raw: Any, source: str = "") -> Any:
    """``raw`` (text from a file, the environment or a flag, or an already typed
    value) as the setting's type, checked; else :class:`ConfigError`."""
    where = f" (from {source})" if source else ""

    def bad(problem: str) -> ConfigError:
        return ConfigError(spec.name, problem + where, f"expected {spec.allowed()}")

    if isinstance(raw, str):
        text = raw.strip()
        if spec.kind is int:
            try:
                value: Any = int(text)
            except ValueError:
                raise bad(f"{_shown(spec, raw)} is not an integer") from None
        elif spec.kind is bool:
            if text.lower() in _TRUE:
                value = True
            elif text.lower() in _FALSE:
                value = False
            else:
                raise bad(f"{_shown(spec, raw)} is not yes or no")
        else:
            value = text
    else:
        if not isinstance(raw, spec.kind) or (spec.kind is int and isinstance(raw, bool)):
            raise bad(f"{raw!r} is not of type {spec.kind.__name__}")
        value = raw
    if spec.kind is int:
        if spec.minimum is not None and value < spec.minimum:
            raise bad(f"{value} is too small")
        if spec.maximum is not None and value > spec.maximum:
            raise bad(f"{value} is too large")
    if spec.choices:
        by_key = {c.lower(): c for c in spec.choices}
        if value.lower() not in by_key:
            raise bad(f"{_shown(spec, value)} is not allowed")
        value = by_key[value.lower()]
    if spec.check is not None:
        problem = spec.check(value)
        if problem:
            raise bad(problem)
    return value


# ---------------------------------------------------------------- loading


def _read_file(path: Path) -> dict[str, str]:
    """The [server] settings of a config file; anything unreadable or odd is an error."""
    label = f"config file {path}"
    allowed = f"expected a readable text file with a [{SECTION}] section"
    if not path.exists():
        raise ConfigError(label, "does not exist", allowed)
    if path.is_dir():
        raise ConfigError(label, "is a directory", allowed)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(label, "is not UTF-8 text", allowed) from None
    except OSError as exc:
        raise ConfigError(label, f"cannot be read: {exc.strerror or exc}", allowed) from None
    # no DEFAULT section: a [DEFAULT] in the file is an unknown section like any other
    parser = configparser.ConfigParser(interpolation=None, default_section="\0")
    try:
        parser.read_string(text, source=str(path))
    except configparser.MissingSectionHeaderError as exc:
        raise ConfigError(
            label, f"line {exc.lineno} comes before any section header", allowed
        ) from None
    except configparser.DuplicateOptionError as exc:
        raise ConfigError(
            label, f"line {exc.lineno}: {exc.option} is set twice", "set each setting once"
        ) from None
    except configparser.DuplicateSectionError as exc:
        raise ConfigError(
            label, f"line {exc.lineno}: [{exc.section}] appears twice", "one [server] section"
        ) from None
    except configparser.Error as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise ConfigError(label, f"cannot be parsed: {first}", allowed) from None
    unknown_sections = [s for s in parser.sections() if s != SECTION]
    if unknown_sections:
        raise ConfigError(
            label, f"unknown section [{unknown_sections[0]}]", f"the only section is [{SECTION}]"
        )
    if not parser.has_section(SECTION):
        raise ConfigError(label, f"has no [{SECTION}] section", allowed)
    values = dict(parser.items(SECTION))
    for key in values:
        if key not in SPECS:
            near = difflib.get_close_matches(key, SPECS, n=1)
            hint = f"did you mean {near[0]}? " if near else ""
            raise ConfigError(
                label,
                f"unknown setting {key!r} in [{SECTION}]",
                f"{hint}the settings are listed by `pba-server serve --help`",
            )
    return values


def load(
    config_file: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    prepare: bool = True,
) -> Settings:
    """The settings, checked. ``overrides`` are the command-line flags (text
    or typed values; ``None`` = not given). With ``prepare``, the directory
    of an SQLite database is created (a command that only reads leaves the
    file system alone)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = config_file or env.get("PBA_CONFIG")
    candidates = [Path(path)] if path else [p for p in DEFAULT_CONFIG_FILES if p.exists()]
    for candidate in candidates[:1]:
        for key, raw in _read_file(candidate).items():
            values[key] = convert(SPECS[key], raw, str(candidate))
    for key, raw in env.items():
        if not key.startswith("PBA_") or key == "PBA_CONFIG":
            continue
        name = "database" if key == "PBA_DATABASE_URL" else key[4:].lower()
        if name in SPECS:
            values[name] = convert(SPECS[name], raw, key)
    for name, raw in (overrides or {}).items():
        if raw is not None:
            if name not in SPECS:
                raise ConfigError(name, "is not a setting", "see `pba-server serve --help`")
            values[name] = convert(SPECS[name], raw, SPECS[name].option)
    settings = replace(Settings(), **values)
    check(settings)
    if prepare:
        make_sqlite_dir(settings.database)
    return settings


def check(settings: Settings) -> None:
    """Checks across settings (each value alone was checked by :func:`convert`)."""
    if settings.tls_port:
        for name in ("tls_cert", "tls_key"):
            path = getattr(settings, name)
            if not path:
                raise ConfigError(
                    "tls_port",
                    f"{settings.tls_port} needs {name}, which is not set",
                    "set tls_cert and tls_key (PEM files), or tls_port = 0 for no TLS listener",
                )
            if not os.path.isfile(path) or not os.access(path, os.R_OK):
                raise ConfigError(name, f"cannot read {path}", "expected a readable PEM file")
        if settings.tls_port == settings.port:
            raise ConfigError(
                "tls_port",
                f"is {settings.tls_port}, the same as port",
                "a port other than port, or 0 for no TLS listener",
            )


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL (None: not SQLite, in memory or a file: URI)."""
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    path = make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    return Path(path)


def make_sqlite_dir(url: str) -> None:
    """Create the directory an SQLite file goes in (relative or absolute path),
    or say in one :class:`ConfigError` why the database cannot be created."""
    path = sqlite_path(url)
    if path is None:
        return
    allowed = "expected an SQLite file in a directory pba-server may create and write"
    if path.is_dir():
        raise ConfigError("database", f"{path} is a directory", allowed)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            "database", f"cannot create the directory {path.parent}: {exc.strerror or exc}", allowed
        ) from None
    if not path.exists() and not os.access(path.parent, os.W_OK | os.X_OK):
        raise ConfigError("database", f"cannot create {path}: permission denied", allowed)


# ---------------------------------------------------------------- documents made from the table


def _wrap(text: str, prefix: str = "# ", width: int = 79) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width, initial_indent=prefix, subsequent_indent=prefix)


def example_config() -> str:
    """``etc/pba-server.conf.example``: every setting, commented out, with its default."""
    lines = [
        "# pba-server configuration. Generated from the settings table in",
        "# pba_server/config.py (`pba-server config example`); do not edit by hand.",
        "#",
        "# Copy to etc/pba-server.conf (or /etc/pba-server/pba-server.conf, or point",
        "# PBA_CONFIG or --config at it) and uncomment what you change. Every setting",
        "# can also be given as an environment variable PBA_<NAME> (PBA_DATABASE_URL",
        "# for the database); flags win over the environment, the environment over",
        "# this file. A file that cannot be read, or holds an unknown section or",
        "# setting or a bad value, stops pba-server with one line saying why.",
        f"[{SECTION}]",
    ]
    for spec in SETTINGS:
        if spec.group:
            lines += ["", f"# ---- {spec.group}"]
        if spec.example:  # shown as an example, with the default said in words
            default = spec.shown_default() or "empty"
            lines += _wrap(f"{spec.help}. Allowed: {spec.allowed()}. Default: {default}.")
            lines.append(f"# {spec.name} = {spec.example}")
        else:
            lines += _wrap(f"{spec.help}. Allowed: {spec.allowed()}.")
            lines.append(f"# {spec.name} = {spec.shown_default()}".rstrip())
    return "\n".join(lines) + "\n"


def markdown_table() -> str:
    """The README's settings table."""
    rows = [
        "| setting | environment | default | allowed | what it is |",
        "|---|---|---|---|---|",
    ]
    for spec in SETTINGS:
        default = f"`{spec.shown_default()}`" if spec.shown_default() else "(empty)"
        name = f"`{spec.name}`" + (f" (`{spec.option}`)" if spec.flag else "")
        if spec.name == "database":
            name += " (`--database`)"
        allowed = spec.allowed().replace("|", "\\|")
        rows.append(f"| {name} | `{spec.env}` | {default} | {allowed} | {spec.help} |")
    return "\n".join(rows) + "\n"


def help_text() -> str:
    """The settings as listed at the end of ``pba-server serve --help``."""
    lines = _wrap(
        "settings (config file [server] NAME = VALUE, or environment PBA_NAME; "
        "flags win over the environment, the environment over the file):",
        prefix="",
        width=78,
    )
    for spec in SETTINGS:
        default = spec.shown_default() or "empty"
        lines.append(f"  {spec.name} ({spec.env}; default {default})")
        lines += _wrap(f"{spec.help}. Allowed: {spec.allowed()}.", prefix="      ", width=78)
    return "\n".join(lines)


def shown_settings(settings: Settings) -> list[str]:
    """``name = value`` for each setting, secrets masked (for `pba-server config check`)."""
    out = []
    for spec in SETTINGS:
        value = getattr(settings, spec.name)
        text = format_value(spec, value)
        if spec.secret and value:
            text = "(set; not shown)"
        elif spec.name == "database":
            text = mask_url(text)
        out.append(f"{spec.name} = {text}".rstrip())
    return out
