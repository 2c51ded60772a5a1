"""The orders' shared field check as a pure function: no database."""

from __future__ import annotations

import pytest

from pba_server.core.errors import ValidationError
from pba_server.orders import checks


def test_optional_text_is_stripped_empty_is_none_and_bounded():
    assert checks.text(None, "note") is None
    assert checks.text("   ", "note") is None
    assert checks.text("  paid  ", "note") == "paid"
    assert checks.text(" " + "x" * 10 + " ", "reason", 10) == "x" * 10
    with pytest.raises(ValidationError) as e:
        checks.text("x" * 11, "reason", 10)
    assert e.value.field == "reason"
