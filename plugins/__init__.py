"""Our own plugins. Installed as the package ``pba_server._plugins`` (see
setup.py) so that a wheel carries them; the loader reads them by file, like
any plugins folder, and skips names starting with ``_`` (this file)."""
