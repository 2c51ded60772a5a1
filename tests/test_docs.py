from __future__ import annotations

from pathlib import Path

from pba_server.core.errors import ALL_ERRORS

ROOT = Path(__file__).resolve().parent.parent


def test_every_fault_code_is_documented_with_its_number():
    doc = (ROOT / "docs" / "api.md").read_text()
    for err in ALL_ERRORS:
        assert f"| `{err.code}` | {err.number} |" in doc, err.code


def test_fault_codes_and_numbers_are_unique():
    assert len({e.code for e in ALL_ERRORS}) == len(ALL_ERRORS)
    assert len({e.number for e in ALL_ERRORS}) == len(ALL_ERRORS)
