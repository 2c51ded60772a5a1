"""Which packages the distribution holds (the metadata is in setup.cfg).

The repository keeps plugins/, migrations/ and wsdl/ at the top level; they
are installed inside the package, as pba_server._plugins, pba_server._migrations
and pba_server._wsdl, so that a wheel carries them and the code finds them by
import (pba_server/core/resources.py), never relative to a source tree. The
same mapping serves an editable install (pip install -e .).
"""

from setuptools import find_packages, setup

SHIPPED = {
    "pba_server._plugins": "plugins",
    "pba_server._migrations": "migrations",
    "pba_server._wsdl": "wsdl",
}

setup(
    packages=[
        *find_packages(include=["pba_server", "pba_server.*"]),
        *SHIPPED,
        # plugins that are packages (a folder with __init__.py) ship too
        *(f"pba_server._plugins.{p}" for p in find_packages("plugins")),
    ],
    package_dir=SHIPPED,
    package_data={
        "pba_server._plugins": ["README.md"],
        # the revision files are not a package (Alembic loads them by path)
        "pba_server._migrations": ["script.py.mako", "versions/*.py"],
        "pba_server._wsdl": ["pba.wsdl"],
    },
)
