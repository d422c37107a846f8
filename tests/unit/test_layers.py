"""The layering DESIGN.md and shared/__init__ describe, checked on the import statements."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"shared", "producer", "consumers", "training", "ridestream", "bench", "broker", "tests"}
# what each part may import of ours (itself always)
ALLOWED = {
    "shared/contract": {"shared", "shared.errors", "shared.contract"},
    "shared/kafka": {"shared", "shared.errors", "shared.contract", "shared.kafka"},
    "shared/data": {"shared", "shared.errors", "shared.contract", "shared.data"},
    "shared/ml": {"shared", "shared.errors", "shared.contract", "shared.data", "shared.ml"},
    "producer": {"shared.*", "producer"},
    "producer/web": {"shared.*", "producer"},  # the backend's web service: the fleet only on the wire
    "consumers": {"shared.*", "consumers"},
    "training": {"shared.*", "training"},
}


def allowed(module: str, rules: set[str]) -> bool:
    """``rules`` name modules, or a package and everything in it with ``.*``."""
    return any(module == r or (r.endswith(".*") and (module == r[:-2] or module.startswith(r[:-1])))
               for r in rules)


def imports_of(path: Path) -> set[str]:
    """Every module of ours that ``path`` imports, at its package depth (``shared.ml``, ``consumers``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
        for name in names:
            parts = name.split(".")
            if parts[0] in OURS:
                found.add(".".join(parts[:2]) if parts[0] == "shared" and len(parts) > 1 else parts[0])
    return found


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_what_its_layer_may(part: str) -> None:
    files = sorted((ROOT / part).rglob("*.py"))
    assert files, part
    wrong = {f"{f.relative_to(ROOT)} imports {m}" for f in files for m in imports_of(f) if not allowed(m, ALLOWED[part])}
    assert not wrong, "\n".join(sorted(wrong))


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("from shared.ml.artifacts import load_model\nimport consumers.runtime\n")
    assert imports_of(bad) == {"shared.ml", "consumers"}
    assert not allowed("shared.ml", ALLOWED["shared/data"]) and not allowed("consumers", ALLOWED["producer"])
    assert allowed("shared.ml", ALLOWED["producer"]) and allowed("shared", ALLOWED["shared/contract"])
