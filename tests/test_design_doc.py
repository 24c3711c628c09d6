"""docs/design.md stays true to the tree: its package map names every module of the two halves
(a new file without a line there fails here; the key table is checked in test_keys.py)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _package_map() -> str:
    doc = (ROOT / "docs" / "design.md").read_text()
    start = doc.index("## Package map")
    return doc[start:doc.index("\n## ", start + 1)]


def test_the_package_map_names_every_module() -> None:
    listed = _package_map()
    missing = [str(path.relative_to(ROOT))
               for package in ("orchestrator", "trainables")
               for path in sorted((ROOT / package).rglob("*.py"))
               if path.name != "__init__.py" and path.name not in listed]
    assert not missing, f"docs/design.md's package map lacks {missing}"
