"""The committed WSDL, installed as the package ``pba_server._wsdl`` (see
setup.py) so that a wheel carries it."""
