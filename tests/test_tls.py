"""The optional TLS listener, started in the test reactor with a throwaway PKI
(root CA -> intermediate -> leaf for 127.0.0.1) made with ``cryptography``."""

from __future__ import annotations

import socket
import ssl
import xmlrpc.client
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import requests
import zeep
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from zeep.transports import Transport

from tests.conftest import ADMIN_PASSWORD, _start_reactor

# Twisted's TLS needs pyOpenSSL (the Twisted[tls] extra, declared in setup.cfg);
# a virtualenv made before that was declared lacks it: reinstall with the README.
pytest.importorskip("OpenSSL", reason="pyOpenSSL missing: reinstall (pip install -e '.[test]')")


@dataclass
class Pki:
    root: Path  # what clients trust
    chain: Path  # leaf + intermediate, as the server's tls_cert
    leaf_only: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str, key, issuer: str, issuer_key, *, ca: bool, san: bool = False
) -> x509.Certificate:
    now = datetime.now(UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if san:
        b = b.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _cert("pba test root", root_key, "pba test root", root_key, ca=True)
    mid = _cert("pba test intermediate", mid_key, "pba test root", root_key, ca=True)
    leaf = _cert("127.0.0.1", leaf_key, "pba test intermediate", mid_key, ca=False, san=True)

    def pem(c: x509.Certificate) -> bytes:
        return c.public_bytes(serialization.Encoding.PEM)

    pki = Pki(d / "root.pem", d / "fullchain.pem", d / "leaf.pem", d / "key.pem")
    pki.root.write_bytes(pem(root))
    pki.chain.write_bytes(pem(leaf) + pem(mid))
    pki.leaf_only.write_bytes(pem(leaf))
    pki.key.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


def _listen_tls(app, cert: Path, key: Path):
    from twisted.internet import reactor, threads
    from twisted.python.threadpool import ThreadPool

    from pba_server.api.serve import _tls_factory, make_site

    _start_reactor()
    pool = ThreadPool(minthreads=1, maxthreads=4, name="pba-tls-test")
    tls_app = replace(app, settings=replace(app.settings, tls_cert=str(cert), tls_key=str(key)))

    def setup():
        pool.start()
        factory = _tls_factory(tls_app, make_site(tls_app, pool))
        return reactor.listenTCP(0, factory, interface="127.0.0.1")

    port = threads.blockingCallFromThread(reactor, setup)
    return port, pool


@pytest.fixture
def tls_server(env, pki) -> Iterator[str]:
    from twisted.internet import reactor, threads

    port, pool = _listen_tls(env.app, pki.chain, pki.key)
    yield f"https://127.0.0.1:{port.getHost().port}"
    threads.blockingCallFromThread(reactor, port.stopListening)
    pool.stop()


def test_whoami_over_https_soap_and_xmlrpc(tls_server, pki):
    session = requests.Session()
    session.verify = str(pki.root)  # only the root: the intermediate must come from the server
    session.trust_env = False  # else REQUESTS_CA_BUNDLE in the environment beats session.verify
    session.auth = ("admin", ADMIN_PASSWORD)
    try:
        wsdl = session.get(f"{tls_server}/soap?wsdl", timeout=30)
        assert wsdl.status_code == 200
        assert f'location="{tls_server}/soap"' in wsdl.text  # the WSDL says https
        client = zeep.Client(f"{tls_server}/soap?wsdl", transport=Transport(session=session))
        me = client.service.WhoAmI()
        assert me.login == "admin" and me.account_type == "provider"
    finally:
        session.close()

    host = tls_server.removeprefix("https://")
    proxy = xmlrpc.client.ServerProxy(
        f"https://admin:{ADMIN_PASSWORD}@{host}/xmlrpc",
        context=ssl.create_default_context(cafile=str(pki.root)),
        allow_none=True,
    )
    try:
        assert proxy.WhoAmI({})["login"] == "admin"
        bad = xmlrpc.client.ServerProxy(
            f"https://admin:wrong@{host}/xmlrpc",
            context=ssl.create_default_context(cafile=str(pki.root)),
        )
        with pytest.raises(xmlrpc.client.Fault) as e:
            bad.WhoAmI({})
        bad("close")()
        assert e.value.faultCode == 4010
    finally:
        proxy("close")()


def test_tls_refuses_old_protocols_and_plain_http(tls_server, pki):
    host, port = tls_server.removeprefix("https://").split(":")
    ctx = ssl.create_default_context(cafile=str(pki.root))
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://{host}:{port}/health", timeout=5)


def test_leaf_without_its_intermediate_does_not_verify(env, pki):
    """The reason the whole chain file is served: with the leaf alone, a client
    that trusts only the root cannot build the path."""
    from twisted.internet import reactor, threads

    port, pool = _listen_tls(env.app, pki.leaf_only, pki.key)
    try:
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(
                f"https://127.0.0.1:{port.getHost().port}/health", verify=str(pki.root), timeout=5
            )
    finally:
        threads.blockingCallFromThread(reactor, port.stopListening)
        pool.stop()
