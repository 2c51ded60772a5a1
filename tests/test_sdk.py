"""The plugin SDK: loader, broken plugins, and our plugins against the
conformance kit."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pba_server.sdk import SDK_VERSION, version_compatible
from pba_server.sdk.loader import DEFAULT_DIR, discover
from pba_server.sdk.testing import GatewayContract

plugins = {p.name: p for p in discover(DEFAULT_DIR, entry_points=False)}


class TestOfflineConformance(GatewayContract):
    plugin = plugins["offline"].cls  # type: ignore[assignment]
    settings = {"instructions": "IBAN DE00 0000"}
    decline_tokens = {"any-token": "offline_payment"}


class TestSandboxCardConformance(GatewayContract):
    plugin = plugins["sandbox_card"].cls  # type: ignore[assignment]
    settings = {"api_key": "sk_test_conformance"}
    approve_token = "tok_approve"
    decline_tokens = {
        "tok_insufficient_funds": "insufficient_funds",
        "tok_stolen_card": "stolen_card",
        "tok_3ds": "authentication_required",
    }
    timeout_token = "tok_timeout"


class TestSandboxCardWithStateFile(TestSandboxCardConformance):
    @pytest.fixture(autouse=True)
    def _state_file(self, tmp_path: Path) -> None:
        self.settings = {"api_key": "sk_test_x", "state_file": str(tmp_path / "sandbox.json")}


def test_our_plugins_load() -> None:
    assert plugins["offline"].status == "ok"
    assert plugins["sandbox_card"].status == "ok"


def test_version_compatibility() -> None:
    major, minor = SDK_VERSION.split(".")
    assert version_compatible(SDK_VERSION)
    assert version_compatible(f"{major}.0")
    assert not version_compatible(f"{int(major) + 1}.0")
    assert not version_compatible(f"{major}.{int(minor) + 1}")
    assert not version_compatible("nonsense")


def test_broken_plugins_are_reported_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "syntax_error.py").write_text("def broken(:\n")
    (tmp_path / "future_sdk.py").write_text(
        (DEFAULT_DIR / "offline.py")
        .read_text()
        .replace('name="offline"', 'name="future_sdk"')
        .replace("sdk_version=SDK_VERSION", 'sdk_version="99.0"')
    )
    (tmp_path / "no_plugin.py").write_text("X = 1\n")
    pkg = tmp_path / "pkg_plugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        (DEFAULT_DIR / "offline.py").read_text().replace('name="offline"', 'name="pkg_plugin"')
    )
    with caplog.at_level(logging.WARNING, logger="pba.plugins"):
        found = {p.name: p for p in discover(tmp_path, entry_points=False)}
    assert found["syntax_error"].status == "broken"
    assert "SyntaxError" in found["syntax_error"].reason
    assert found["future_sdk"].status == "broken"
    assert "targets SDK 99.0" in found["future_sdk"].reason
    assert found["no_plugin"].status == "broken"
    assert found["pkg_plugin"].status == "ok"
    assert "syntax_error" in caplog.text and "future_sdk" in caplog.text
