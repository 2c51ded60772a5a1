"""Concurrent calls: idempotency keys and unique logins hold under many threads."""

from __future__ import annotations

import threading
import xmlrpc.client

from tests.support import xmlrpc_client


def _hammer(base, n, make_args, op, login="admin", password=None):
    results, errors = [], []
    barrier = threading.Barrier(n)

    def run(i):
        proxy = xmlrpc_client(base, login, password)
        try:
            barrier.wait()
            results.append(getattr(proxy, op)(make_args(i)))
        except xmlrpc.client.Fault as f:
            errors.append(f)
        finally:
            proxy("close")()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, errors


def test_same_idempotency_key_from_many_threads_creates_one_account(api, server, env):
    results, errors = _hammer(
        server,
        8,
        lambda i: {"type": "customer_personal", "name": "Same", "idempotency_key": "dup-1"},
        "AccountCreate",
        password=env.admin_password,
    )
    assert not errors, errors
    assert len({r["id"] for r in results}) == 1
    assert api.xmlrpc().AccountList({})["total"] == 1


def test_same_login_from_many_threads_one_wins(api, server, env):
    provider = api.xmlrpc().WhoAmI({})["account_id"]
    results, errors = _hammer(
        server,
        6,
        lambda i: {
            "account_id": provider,
            "login": "racer",
            "password": "racer-pass-1",
            "full_name": f"R{i}",
            "roles": ["readonly"],
        },
        "UserCreate",
        password=env.admin_password,
    )
    assert len(results) == 1
    assert len(errors) == 5 and all(f.faultCode == 4090 for f in errors), errors
