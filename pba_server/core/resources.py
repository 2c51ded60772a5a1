"""The files pba-server ships beside its code: the built-in plugins, the
Alembic migrations and the WSDL.

They stay in the repository's top-level ``plugins/``, ``migrations/`` and
``wsdl/`` folders; setup.py installs them as the packages
``pba_server._plugins``, ``pba_server._migrations`` and ``pba_server._wsdl``,
so they are found by import, the same way for a wheel (copied into
site-packages) and an editable install (setuptools' finder maps the names to
the checkout's folders). Nothing here depends on where the source tree is.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

PLUGINS = "pba_server._plugins"
MIGRATIONS = "pba_server._migrations"
WSDL = "pba_server._wsdl"


class MissingResource(RuntimeError):
    """A shipped folder is not installed: a broken or partial installation."""


@cache
def package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise MissingResource(
            f"{package} is not installed (a broken installation of pba-server? "
            "reinstall it: pip install pba-server, or pip install -e . in a checkout)"
        )
    return Path(locations[0])


def builtin_plugins_dir() -> Path:
    """The folder of the plugins shipped with the server."""
    return package_dir(PLUGINS)


def migrations_dir() -> Path:
    """Alembic's script location (env.py, script.py.mako, versions/)."""
    return package_dir(MIGRATIONS)


def wsdl_file() -> Path:
    """The WSDL as committed (address http://127.0.0.1:8080/soap)."""
    return package_dir(WSDL) / "pba.wsdl"
