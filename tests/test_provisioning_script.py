"""The ``script`` processing module with real executables written by the test:
exit codes, answers, timeout, bad JSON; and provisioning through it."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from pba_server.sdk import ConfigurationError, NotSupported, loader
from pba_server.sdk.provisioning import (
    Done,
    FinalFailure,
    InProgress,
    RetryableFailure,
    ServiceRequest,
)
from tests.billing_support import customer
from tests.prov_support import instance, plan, provision, run, subscribe

SCRIPT = loader.plugins()["script"].cls


def _exe(tmp_path: Path, body: str, name: str = "prov.py") -> str:
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\nimport json, sys, time\n{body}\n")
    path.chmod(0o755)
    return str(path)


def _request(action: str = "create", **kw: Any) -> ServiceRequest:
    base: dict[str, Any] = {
        "key": "42",
        "action": action,
        "service_id": 7,
        "subscription_id": 3,
        "account_id": 5,
        "account_name": "Cust; rm -rf /",
        "service_type": "hosting",
        "template": "Web",
        "module_settings": {"cluster": "fra"},
        "parameters": {"domain": "example.com"},
        "limits": {"Disk": Decimal("10.5")},
    }
    base.update(kw)
    return ServiceRequest(**base)


def _module(exe: str, **settings: str) -> Any:
    return SCRIPT({"executable": exe, "timeout": "10", **settings})


def test_exit_0_is_done_with_the_answer_and_the_request_arrives_as_json(tmp_path: Path) -> None:
    seen = tmp_path / "seen.json"
    exe = _exe(
        tmp_path,
        f"req = json.load(sys.stdin)\nopen({str(seen)!r}, 'w').write(json.dumps(req))\n"
        "print(json.dumps({'platform_id': 'acct-' + req['key'], 'data': {'ip': '192.0.2.1'},"
        " 'usage': {'Disk': '3.25'}}))",
    )
    result = _module(exe).perform(_request())
    assert result == Done(
        platform_id="acct-42", data={"ip": "192.0.2.1"}, usage={"Disk": Decimal("3.25")}
    )
    sent = json.loads(seen.read_text())
    assert sent["action"] == "create" and sent["key"] == "42"
    assert sent["account_name"] == "Cust; rm -rf /"  # data, never a shell
    assert sent["limits"] == {"Disk": "10.5"} and sent["parameters"] == {"domain": "example.com"}


def test_empty_output_is_done_and_in_progress_is_polled(tmp_path: Path) -> None:
    assert _module(_exe(tmp_path, "pass")).perform(_request("suspend")) == Done()
    exe = _exe(tmp_path, "print(json.dumps({'status': 'in_progress', 'poll_after': 90}))", "p.py")
    assert _module(exe).perform(_request()) == InProgress(poll_after=90)


def test_exit_75_is_retryable_other_codes_are_final(tmp_path: Path) -> None:
    exe = _exe(tmp_path, "sys.stderr.write('panel busy\\n'); sys.exit(75)")
    assert _module(exe).perform(_request()) == RetryableFailure("panel busy")
    exe = _exe(tmp_path, "sys.stderr.write('\\nno such plan\\nmore\\n'); sys.exit(2)", "f.py")
    assert _module(exe).perform(_request()) == FinalFailure("no such plan")
    exe = _exe(tmp_path, "sys.exit(3)", "g.py")
    assert _module(exe).perform(_request()) == FinalFailure("exit status 3")


def test_a_script_that_hangs_is_killed_and_retried(tmp_path: Path) -> None:
    exe = _exe(tmp_path, "time.sleep(30)")
    result = _module(exe, timeout="1").perform(_request())
    assert isinstance(result, RetryableFailure) and "longer than 1 s" in result.message


def test_bad_json_is_retryable(tmp_path: Path) -> None:
    for i, out in enumerate(["not json", "[1, 2]", '{"data": [1]}', '{"usage": {"x": "y"}}']):
        exe = _exe(tmp_path, f"print({out!r})", f"b{i}.py")
        result = _module(exe).perform(_request())
        assert isinstance(result, RetryableFailure), out
        assert "not valid JSON" in result.message


def test_settings_are_checked_and_actions_can_be_limited(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        SCRIPT({"executable": "prov.sh", "timeout": "10"})
    with pytest.raises(ConfigurationError):
        SCRIPT({"executable": "/bin/true", "timeout": "0"})
    with pytest.raises(ConfigurationError):
        SCRIPT({"executable": "/bin/true", "timeout": "10", "actions": "create,explode"})
    m = SCRIPT({"executable": "/bin/true", "timeout": "10", "actions": "create,delete"})
    with pytest.raises(NotSupported):
        m.perform(_request("suspend"))
    missing = _module(str(tmp_path / "missing"))
    assert isinstance(missing.perform(_request()), RetryableFailure)


def test_provisioning_through_the_script_module(env: Any, tmp_path: Path) -> None:
    exe = _exe(
        tmp_path,
        "req = json.load(sys.stdin)\n"
        "print(json.dumps({'platform_id': 'srv-' + str(req['service_id']),"
        " 'data': {'host': req['parameters']['hostname']}}))",
    )
    instance(env, "in-house", plugin="script", settings={"executable": exe, "timeout": "20"})
    version = plan(env, module="script", name="In-house")
    sub = subscribe(env, customer(env), version, {"hostname": "h1.example.com"})
    provision(env, sub)
    assert run(env) == 1
    from sqlalchemy import select

    from pba_server.core.db import UnitOfWork
    from pba_server.provisioning.models import Service

    with UnitOfWork(env.app.engine) as uow:
        svc = uow.session.scalar(select(Service).where(Service.subscription_id == sub))
        assert svc is not None
        assert svc.status == "active" and svc.platform_id == f"srv-{svc.id}"
        assert json.loads(svc.data) == {"host": "h1.example.com"}
