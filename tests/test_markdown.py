"""Every markdown file of the repository renders as its author meant: code
fences close where they should (no fence swallowing the sections after it),
every Python example in the docs compiles, relative links lead to files that
exist, and every complete plugin example in docs/plugins.md loads through the
SDK loader and can be built with the server's clock."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pba_server.core.clock import FixedClock
from pba_server.sdk import loader
from tests.markdown_support import ROOT, Block, blocks_of, markdown_files, parse

FILES = markdown_files()
PYTHON = ("python", "py", "python3")


def _id(p: Path) -> str:
    return str(p.relative_to(ROOT))


def test_the_repository_markdown_is_found():
    names = {_id(p) for p in FILES}
    assert {"README.md", "docs/api.md", "docs/plugins.md", "docs/getting-started.md"} <= names


def fence_problems(text: str) -> list[str]:
    """Fences that do not close, or that hold what looks like another fence
    or a heading: the mark of a fence opened by mistake that runs on."""
    lines = text.split("\n")
    problems = []
    for b in parse(text):
        if b.kind != "fence":
            continue
        first = lines[b.line - 1].lstrip()
        marker = re.match(r"`{3,}|~{3,}", first)
        assert marker is not None
        end = b.line + b.text.count("\n")  # 0-based index of the closing line
        closing = lines[end].strip() if end < len(lines) else ""
        if not (closing.startswith(marker.group()) and set(closing) == {marker.group()[0]}):
            problems.append(f"line {b.line}: the fence is never closed")
            continue
        for i, ln in enumerate(b.text.split("\n")):
            if ln.lstrip().startswith(marker.group()[:3]):
                problems.append(f"line {b.line + 1 + i}: a fence inside the fence at {b.line}")
            elif b.info in PYTHON and re.match(r"#{2,6} \S", ln):  # "# x" is a comment
                problems.append(f"line {b.line + 1 + i}: a heading inside the fence at {b.line}")
    return problems


def test_fence_check_finds_a_fence_that_runs_on():
    broken = "# A\n\n```python\nx = 1\n## B\n\ntext\n```python\ny = 2\n```\n\n## C\n\n```text\nopen"
    found = fence_problems(broken)
    assert any("a fence inside the fence at 3" in p for p in found), found
    assert any("a heading inside the fence at 3" in p for p in found), found
    assert any("line 14: the fence is never closed" in p for p in found), found
    # a ``` example inside a ~~~ fence, and a comment in Python, are fine
    assert fence_problems("# A\n\n```python\n# x\nx = 1\n```\n\n~~~\n```\n~~~\n") == []


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_fences_close(path: Path):
    assert fence_problems(path.read_text()) == []


def python_blocks(path: Path) -> list[Block]:
    return [b for b in blocks_of(path) if b.kind == "fence" and b.info in PYTHON]


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_python_examples_compile(path: Path):
    for b in python_blocks(path):
        try:
            compile(b.text, f"{_id(path)}:{b.line}", "exec")
        except SyntaxError as exc:
            pytest.fail(f"{_id(path)}: the python block at line {b.line} does not compile: {exc}")


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("path", FILES, ids=_id)
def test_relative_links_lead_somewhere(path: Path):
    text = path.read_text()
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        file = (path.parent / target.split("#", 1)[0]).resolve()
        assert file.exists(), f"{_id(path)} links to {target}, which does not exist"


def plugin_examples() -> list[Block]:
    """The complete plugins of docs/plugins.md: the blocks that define PLUGIN."""
    return [
        b
        for b in python_blocks(ROOT / "docs" / "plugins.md")
        if re.search(r"^PLUGIN = \w+$", b.text, re.MULTILINE)
    ]


def test_plugins_md_has_its_complete_examples():
    kinds = set()
    for b in plugin_examples():
        m = re.search(r'^\s*kind="(\w+)"', b.text, re.M)
        kinds.add(m.group(1) if m else "payment_gateway")
    assert kinds >= {"payment_gateway", "processing_module", "notification_channel"}, kinds


@pytest.mark.parametrize("block", plugin_examples(), ids=lambda b: f"line-{b.line}")
def test_plugin_example_loads_through_the_sdk_loader(block: Block, tmp_path: Path):
    m = re.search(r'name="(\w+)"', block.text)
    assert m is not None, f"the example at line {block.line} names no plugin"
    name = m.group(1)
    (tmp_path / f"{name}.py").write_text(block.text)
    try:
        (found,) = loader.discover(tmp_path, entry_points=False)
        assert (found.name, found.status, found.reason) == (name, "ok", ""), found
        # built as the server builds it: the settings, and the server's clock from __init__ on
        settings = {f.name: "https://plugin.example/api" for f in found.cls.info.settings}
        clock = FixedClock(datetime(2031, 5, 6, 7, 8, tzinfo=UTC))
        obj = loader.instantiate(found.cls, settings, clock=clock)
        assert obj.settings == settings
        assert (obj.now(), obj.today().isoformat()) == (clock.now(), "2031-05-06")
    finally:
        sys.modules.pop(f"pba_plugins.{name}", None)
