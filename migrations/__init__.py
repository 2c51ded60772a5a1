"""The Alembic migrations, installed as the package ``pba_server._migrations``
(see setup.py) so that a wheel carries them."""
