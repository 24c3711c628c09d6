"""The safe YAML loader: duplicate keys, YAML 1.2 floats, merge keys, tags, line map."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.sweepfile import SpecError
from orchestrator.sweepfile.yaml_loader import (
    load_yaml_file,
    parse_override_value,
    parse_yaml_text,
)


def test_yaml_12_floats_and_line_map() -> None:
    loaded = parse_yaml_text("train:\n  lr: 1e-3\n  wd: 5E-2\n  n: 3\nname: x1e3\n", "f.yaml")
    assert loaded.data == {"train": {"lr": 0.001, "wd": 0.05, "n": 3}, "name": "x1e3"}
    assert loaded.lines[("train", "wd")] == 3 and loaded.line_of(("train", "nope")) == 1


def test_duplicate_keys_are_refused_but_merge_keys_are_fine() -> None:
    with pytest.raises(SpecError, match=r"f.yaml:3: duplicate key 'a': first on line 1"):
        parse_yaml_text("a: 1\nb: 2\na: 3\n", "f.yaml")
    loaded = parse_yaml_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n", "f.yaml")
    assert loaded.data["other"] == {"x": 1, "y": 3} and loaded.lines[("other", "y")] == 4


@pytest.mark.parametrize("text", ["a: !!python/object/apply:os.system [ls]\n",
                                  "a: !!python/name:os.system\n", "a: !custom 1\n"])
def test_tags_are_refused_cleanly(text: str) -> None:
    with pytest.raises(SpecError, match="is not allowed"):
        parse_yaml_text(text, "f.yaml")


def test_file_level_problems(tmp_path: Path) -> None:
    path = tmp_path / "f.yaml"
    for content, fragment in [(b"   \n", "empty"), (b"a: 1\x00", "binary"),
                              (b"a: caf\xe9\n", "not UTF-8"), (b"a:\n\tb: 1\n", "tab character")]:
        path.write_bytes(content)
        with pytest.raises(SpecError, match=fragment):
            load_yaml_file(path)
    path.write_bytes(b"\xef\xbb\xbfa: 1\n")  # a UTF-8 byte-order mark is fine
    assert load_yaml_file(path).data == {"a": 1}


def test_override_values_are_yaml() -> None:
    assert parse_override_value("[0, 1]", "f", "--set x") == [0, 1]
    assert parse_override_value("null", "f", "--set x") is None
    assert parse_override_value("1e-4", "f", "--set x") == 1e-4
    assert parse_override_value("max", "f", "--set x") == "max"
