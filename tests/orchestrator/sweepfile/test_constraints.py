"""Model constructor rules over several params (trainables/models: CONSTRAINTS), checked for the
search space by load_spec, and spec_diff (the resume refusal's changed keys)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.sweepfile import SpecError, load_spec, spec_diff

SWEEP = """name: dm
data: {corpus: synthetic, features: logmel}
model: {name: transformer, d_model: 64, heads: 4}
train: {epochs: 1}
search:
  trials: 2
  params:
PARAMS
"""


def _load(tmp_path: Path, params: str):
    path = tmp_path / "dm.yaml"
    path.write_text(SWEEP.replace("PARAMS", params))
    return load_spec(path)


def test_a_searched_d_model_that_heads_does_not_divide_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as err:
        _load(tmp_path, "    model.d_model: {choice: [30, 64]}\n    model.heads: {choice: [4]}")
    text = str(err.value)
    assert err.value.key == "search.params.model.d_model" and err.value.line == 8
    assert "model.d_model {'choice': [30, 64]} and model.heads {'choice': [4]}" in text
    assert "d_model=30, heads=4" in text and "d_model % heads == 0" in text


@pytest.mark.parametrize(("params", "ok"), [
    ("    model.d_model: {choice: [32, 64, 128]}", True),  # heads 4 (fixed) divides every choice
    ("    model.heads: {int: [1, 8]}", False),  # 3, 5, 6, 7 do not divide 64
    ("    model.heads: {choice: [1, 2, 4, 8]}", True),
    ("    model.d_model: {int: [30, 34]}", False),  # an int range is enumerated
])
def test_every_combination_is_checked(tmp_path: Path, params: str, ok: bool) -> None:
    if ok:
        _load(tmp_path, params)
    else:
        with pytest.raises(SpecError, match="breaks transformer's rule d_model % heads == 0"):
            _load(tmp_path, params)


def test_spec_diff_names_the_changed_keys() -> None:
    old = {"train": {"epochs": 1, "lr": 1e-3}, "model": {"name": "transformer"},
           "search": {"params": {"model.layers": {"int": [1, 4]}}, "trials": 2}}
    new = {"train": {"epochs": 6, "lr": 1e-3}, "search": {"params": {}, "trials": 9},
           "model": {"name": "transformer", "heads": 4}}
    assert spec_diff(old, new) == [
        "model.heads: (absent) -> 4",
        "train.epochs: 1 -> 6",
        "search.params.model.layers: {'int': [1, 4]} -> (absent)",
    ]
