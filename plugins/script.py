"""Script provisioning: runs an executable for every operation -- the way most
in-house platforms are wired in.

The executable (setting ``executable``: an absolute path, run directly, never
through a shell) gets the operation as one JSON object on stdin: every field
of :class:`~pba_server.sdk.provisioning.ServiceRequest` (``key``, ``action``,
``service_id``, ``parameters``, ``limits`` as decimal strings, ``platform_id``,
``data``, ``until``...). It answers by its exit status:

- ``0``: done; stdout is a JSON object ``{"platform_id": str|null, "data":
  {str: str}, "usage": {resource: number-as-string}}`` (all optional), or
  ``{"status": "in_progress", "poll_after": seconds}`` to be asked again;
- ``75`` (EX_TEMPFAIL): failed for now, retried on the server's schedule;
- anything else: failed finally.

The first line of stderr (or stdout) is the failure message. An executable
that runs longer than ``timeout`` seconds is killed: a retryable failure (it
is called again with the same ``key``, so it must be idempotent by key).
``actions`` lists what it supports (default all).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict
from decimal import Decimal, InvalidOperation
from typing import Any

from pba_server.sdk import SDK_VERSION, ConfigurationError, NotSupported, PluginInfo, SettingField
from pba_server.sdk.provisioning import (
    ACTIONS,
    Done,
    FinalFailure,
    InProgress,
    ModuleResult,
    ProcessingModule,
    RetryableFailure,
    ServiceRequest,
)

EX_TEMPFAIL = 75
MAX_OUTPUT = 1024 * 1024


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:500]
    return ""


def _strings(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{what} is not an object")
    return {str(k): str(v) for k, v in value.items()}


class ScriptModule(ProcessingModule):
    info = PluginInfo(
        name="script",
        version="1.0.0",
        sdk_version=SDK_VERSION,
        kind="processing_module",
        description="Runs an executable with the operation as JSON on stdin",
        settings=(
            SettingField(
                "executable", description="Absolute path of the program to run", kind="program"
            ),
            SettingField(
                "timeout",
                type="int",
                required=False,
                default="60",
                description="Seconds before the program is killed (then retried)",
            ),
            SettingField(
                "actions",
                required=False,
                default=",".join(ACTIONS),
                description="Comma-separated actions the program supports",
            ),
        ),
        capabilities=frozenset(ACTIONS),
        operator_only=True,  # runs a program on the server
    )

    def __init__(self, settings: dict[str, str]) -> None:
        super().__init__(settings)
        exe = settings.get("executable", "")
        if not exe or not os.path.isabs(exe):
            raise ConfigurationError("executable must be an absolute path")
        try:
            self.timeout = int(settings.get("timeout") or "60")
        except ValueError:
            raise ConfigurationError("timeout must be a whole number of seconds") from None
        # below the server's running timeout (30 min by default), after which
        # a call is taken to have died and is made again
        if not 1 <= self.timeout <= 1200:
            raise ConfigurationError("timeout must be 1 to 1200 seconds")
        names = [a.strip() for a in (settings.get("actions") or ",".join(ACTIONS)).split(",")]
        unknown = [a for a in names if a and a not in ACTIONS]
        if unknown:
            raise ConfigurationError(f"unknown action(s): {', '.join(unknown)}")
        self.executable = exe
        self.actions = frozenset(a for a in names if a)

    def perform(self, request: ServiceRequest) -> ModuleResult:
        if request.action not in self.actions:
            raise NotSupported(f"the script does not do {request.action}")
        payload = json.dumps(asdict(request), default=str, sort_keys=True)
        try:
            proc = subprocess.run(  # noqa: S603 - a fixed argv, no shell
                [self.executable],
                input=payload,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                shell=False,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return RetryableFailure(f"the script ran longer than {self.timeout} s")
        except OSError as exc:
            return RetryableFailure(f"cannot run the script: {exc.strerror or exc}")
        out, err = proc.stdout[:MAX_OUTPUT], proc.stderr[:MAX_OUTPUT]
        if proc.returncode == EX_TEMPFAIL:
            return RetryableFailure(_first_line(err) or _first_line(out) or "exit status 75")
        if proc.returncode != 0:
            why = _first_line(err) or _first_line(out) or f"exit status {proc.returncode}"
            return FinalFailure(why)
        try:
            answer = json.loads(out) if out.strip() else {}
            if not isinstance(answer, dict):
                raise ValueError("the answer is not a JSON object")
            if answer.get("status") == "in_progress":
                return InProgress(
                    poll_after=int(answer.get("poll_after", 60)),
                    message=str(answer.get("message", "")),
                )
            pid = answer.get("platform_id")
            usage = {k: Decimal(v) for k, v in _strings(answer.get("usage"), "usage").items()}
            return Done(
                platform_id=None if pid is None else str(pid),
                data=_strings(answer.get("data"), "data"),
                usage=usage,
            )
        except (ValueError, InvalidOperation, TypeError) as exc:
            # it may have done the work: retrying with the same key is safe
            return RetryableFailure(f"the script's answer is not valid JSON: {exc}"[:500])


PLUGIN = ScriptModule
