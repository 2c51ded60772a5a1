"""docs/getting-started.md and README's "Try it" lines, executed.

A real server is started on a free port with a fresh SQLite database (its
first ``serve``); every ```python block of each walk-through of the guide is
run in order in one fresh Python process, as a reader pastes them into
``.venv/bin/python``, and what each prints must be the ```text block that
follows it. Only the placeholders are replaced: ``PASSWORD`` by the password
the first start printed, ``127.0.0.1:8080`` by the server's address. README's
"Try it" commands run as printed (through the shell), with ``.venv/bin/python``
being this interpreter.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.markdown_support import ROOT, Block, blocks_of
from tests.serverproc import child_env, running

pytestmark = pytest.mark.slow

GUIDE = ROOT / "docs" / "getting-started.md"
PARTS = ("With zeep (SOAP)", "With xmlrpc.client (XML-RPC)")
END = "----8<---- end of block ----8<----"
RUNNER = f"""
import json, sys
ns = {{"__name__": "__main__"}}
for i, code in enumerate(json.load(sys.stdin)):
    exec(compile(code, f"<getting-started block {{i + 1}}>", "exec"), ns)
    print({END!r}, flush=True)
"""


def walkthrough(part: str) -> list[tuple[Block, str | None]]:
    """The python blocks of one part, each with the output shown after it."""
    blocks = [b for b in blocks_of(GUIDE) if b.kind == "fence" and b.section == part]
    steps: list[tuple[Block, str | None]] = []
    for i, b in enumerate(blocks):
        if b.info == "python":
            nxt = blocks[i + 1] if i + 1 < len(blocks) else None
            steps.append((b, nxt.text if nxt is not None and nxt.info == "text" else None))
    return steps


def substitute(code: str, password: str, base: str) -> str:
    host_port = base.removeprefix("http://").rstrip("/")
    return code.replace("PASSWORD", password).replace("127.0.0.1:8080", host_port)


def run_part(part: str, password: str, base: str, cwd: Path) -> None:
    steps = walkthrough(part)
    source = "".join(b.text for b, _ in steps)
    # the placeholders are there, exactly where the reader replaces them
    assert source.count("PASSWORD") == 1, part
    assert source.count("127.0.0.1:8080") == 1, part
    codes = [substitute(b.text, password, base) for b, _ in steps]
    done = subprocess.run(
        [sys.executable, "-c", RUNNER],
        input=json.dumps(codes),
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    outputs = done.stdout.split(END + "\n")
    ran = len(outputs) - 1
    assert done.returncode == 0 and ran == len(steps), (
        f"{part}: block at line {steps[min(ran, len(steps) - 1)][0].line} failed:\n"
        f"{done.stderr}\n--- stdout:\n{done.stdout}"
    )
    for (block, expected), got in zip(steps, outputs, strict=False):
        want = (expected or "").rstrip()
        assert got.rstrip() == want, (
            f"{part}: the block at docs/getting-started.md line {block.line} printed\n"
            f"{got}\nbut the guide says\n{want}"
        )


def test_guide_has_both_walkthroughs_with_their_outputs():
    for part in PARTS:
        steps = walkthrough(part)
        assert len(steps) >= 4, part
        assert all(expected is not None for b, expected in steps[:1]), part
        names = " ".join(b.text for b, _ in steps)
        for op in (
            "AccountCreate",
            "PlanCreate",
            "OrderPlace",
            "TaskComplete",
            "ServiceList",
            "InvoiceGet",
            "BillingRun",
            "PaymentRecord",
            "StatementGet",
        ):
            assert op in names, (part, op)


def test_getting_started_runs_as_written_and_readme_try_it(tmp_path):
    with running(cwd=tmp_path) as server:
        password = server.wait_for_output(r"password: (\S+)")[1]
        for part in PARTS:  # in the guide's order, one after the other on one server
            run_part(part, password, server.base, tmp_path)
        readme_try_it(password, server.base, tmp_path)


def readme_try_it(password: str, base: str, cwd: Path) -> None:
    readme = blocks_of(ROOT / "README.md")
    (block,) = [b for b in readme if b.after.startswith("Try it")]
    commands = [c for c in block.text.split("\n\n") if c.strip()]
    assert len(commands) == 2 and all(c.startswith(".venv/bin/python ") for c in commands)
    for command in commands:
        line = substitute(command, password, base).replace(
            ".venv/bin/python", shlex.quote(sys.executable), 1
        )
        done = subprocess.run(
            ["/bin/sh", "-c", line],
            cwd=cwd,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, (command, done.stderr)
        assert "'login': 'admin'" in done.stdout, (command, done.stdout)
