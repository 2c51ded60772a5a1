"""The import rules of docs/architecture.md, tested (ENGINEERING.md habit 13).

- the import-linter contracts in pyproject.toml (``lint-imports``): layers,
  no cycles between the modules of a package, no transport in features,
  plugins import only the SDK;
- no module imports another module's underscore names (an AST scan: the
  contracts see modules, not names);
- ``types`` modules are vocabulary: they import only the standard library,
  ``pba_server.core`` and other ``types`` modules (that is why the contracts
  let any layer import them).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Known underscore imports still to remove (issue 15): "importer: name". The
# test fails when one no longer occurs, so the list only shrinks.
KNOWN_PRIVATE_USES: set[str] = set()


def _modules() -> list[tuple[str, Path]]:
    out = []
    for top in ("pba_server", "plugins"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out.append((".".join(parts), path))
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_uses() -> set[str]:
    """Every ``from m import _x`` and ``m._x`` (``m`` an imported module of
    ours) whose ``_x`` belongs to another module."""
    found: set[str] = set()
    for mod, path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if not node.module.startswith(("pba_server", "plugins")):
                    continue
                for a in node.names:
                    if _private(a.name) and node.module != mod:
                        found.add(f"{mod}: {node.module}.{a.name}")
                    aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("pba_server") and a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and _private(node.attr)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
            ):
                found.add(f"{mod}: {aliases[node.value.id]}.{node.attr}")
    return found


def test_import_contracts_hold() -> None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe is not None, "import-linter is not installed (setup.cfg test extras)"
    run = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


def test_no_module_uses_another_modules_underscore_names() -> None:
    found = private_uses()
    new = sorted(found - KNOWN_PRIVATE_USES)
    assert not new, "underscore names used from another module:\n" + "\n".join(new)
    gone = sorted(KNOWN_PRIVATE_USES - found)
    assert not gone, "fixed, delete from KNOWN_PRIVATE_USES:\n" + "\n".join(gone)


def test_types_modules_are_vocabulary() -> None:
    bad = []
    for mod, path in _modules():
        if not mod.startswith("pba_server.") or not mod.endswith(".types"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for n in names:
                if n.startswith("pba_server"):
                    allowed = n.endswith(".types") or n.startswith("pba_server.core.")
                else:
                    allowed = n.split(".")[0] in sys.stdlib_module_names
                if not allowed:
                    bad.append(f"{mod} imports {n}")
    assert not bad, "\n".join(bad)
