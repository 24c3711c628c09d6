"""Every malformed sweep file in bad_inputs/ is refused with one SpecError that names the file,
the offending key (or line) and what was expected; the expectations are the table in
bad_inputs/README.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.sweepfile import SpecError, load_spec

BAD = Path(__file__).parent / "bad_inputs"
GENERATED = {
    "binary.yaml": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10",
    "not_utf8.yaml": "name: bad\ndata: {corpus: synth\xe9tic}\n".encode("latin-1"),
    "deep_nesting.yaml": b"name: bad\ndata: " + b"[" * 2000 + b"]" * 2000 + b"\n",
    "too_large.yaml": b"name: bad\n" + b"# a comment line of a very long sweep file\n" * 50_000,
}


def _rows() -> dict[str, tuple[str | None, str]]:
    rows = {}
    for line in (BAD / "README.md").read_text().splitlines():
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 4 and cells[0].endswith(".yaml"):
            rows[cells[0]] = (None if cells[1] == "-" else cells[1], cells[2])
    return rows


ROWS = _rows()


def test_the_readme_lists_every_file_and_the_corpus_is_large() -> None:
    files = {p.name for p in BAD.glob("*.yaml")}
    assert files | set(GENERATED) == set(ROWS)
    assert len(ROWS) >= 30


@pytest.mark.parametrize("name", sorted(ROWS))
def test_bad_file_is_refused_with_a_readable_message(name: str, tmp_path: Path) -> None:
    key, fragment = ROWS[name]
    if name in GENERATED:
        path = tmp_path / name
        path.write_bytes(GENERATED[name])
    else:
        path = BAD / name
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert str(path) in message and info.value.file == str(path)
    assert fragment in message, message
    if key is not None and key.startswith(":"):
        assert info.value.line == int(key.strip(":")), message
        assert f"{path}{key}" in message
    elif key is not None:
        assert info.value.key == key, message
    assert "Traceback" not in message and "\n" not in message


@pytest.mark.parametrize("name", ["inverted_range.yaml", "unknown_model_key.yaml",
                                  "zero_epochs.yaml", "choice_wrong_type.yaml"])
def test_value_errors_point_at_the_line(name: str) -> None:
    """Errors about a key carry the line where that key is written."""
    path = BAD / name
    with pytest.raises(SpecError) as info:
        load_spec(path)
    key = info.value.key.rsplit(".", 1)[-1]
    lines = path.read_text().splitlines()
    assert info.value.line is not None
    assert key.split(".")[-1] in lines[info.value.line - 1] or key.isdigit()
