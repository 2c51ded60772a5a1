"""ruff (lint + format) and mypy run as part of the test suite, so CI enforces them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_lint():
    r = _run(
        str(BIN / "ruff"), "check", "pba_server", "tests", "scripts", "plugins", "migrations/env.py"
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_ruff_format():
    r = _run(
        str(BIN / "ruff"),
        "format",
        "--check",
        "pba_server",
        "tests",
        "scripts",
        "plugins",
        "migrations/env.py",
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy():
    r = _run(str(BIN / "mypy"))
    assert r.returncode == 0, r.stdout + r.stderr
