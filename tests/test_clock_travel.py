"""No code reads the wall clock but ``core/clock.py``, and no test depends on
today's date: the date-sensitive test files pass with the wall clock moved
years away (time-machine, in a child pytest)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# the calls that read the wall clock; time.monotonic / perf_counter measure
# durations and may be used anywhere
WALL_CLOCK = {
    ("date", "today"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "gmtime"),
    ("time", "localtime"),
}


def _wall_clock_reads(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
            if (name, node.func.attr) in WALL_CLOCK:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}.{node.func.attr}()")
    return found


def test_only_the_clock_module_reads_the_wall_clock():
    files = [*ROOT.joinpath("pba_server").rglob("*.py"), *ROOT.joinpath("plugins").rglob("*.py")]
    reads = [
        r for f in files if f != ROOT / "pba_server/core/clock.py" for r in _wall_clock_reads(f)
    ]
    assert reads == []


def test_the_scan_sees_a_wall_clock_read(tmp_path: Path):
    f = ROOT / "tests" / "_wall_clock_sample.py"
    f.write_text("import datetime as dt\nfrom datetime import date\nx = date.today()\n")
    try:
        assert _wall_clock_reads(f) == ["tests/_wall_clock_sample.py:3: date.today()"]
    finally:
        f.unlink()


# Files whose tests freeze, move or compare dates: domains (expiry), renewals,
# billing runs and dunning days, proration, usage periods, the stories.
DATE_SENSITIVE = [
    "tests/test_domains_provisioning.py",
    "tests/test_domains.py",
    "tests/test_subscriptions_service.py",
    "tests/test_billing_run.py",
    "tests/test_dunning.py",
    "tests/test_usage.py",
    "tests/test_orders_billing_run.py",
]


@pytest.mark.slow
@pytest.mark.parametrize("when", ["2031-02-28", "2019-12-31"])
def test_date_sensitive_files_pass_years_away(when: str):
    env = {**os.environ, "PBA_TEST_TRAVEL": when}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-n",
            "0",
            "-k",
            "sqlite",
            *DATE_SENSITIVE,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    tail = "\n".join(r.stdout.splitlines()[-30:])
    assert r.returncode == 0, tail + r.stderr[-3000:]
    assert " passed" in tail and " failed" not in tail
