"""`data.ssl` is checked by the spec (before Ray starts), with trainables/data/ssl's rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.sweepfile import SpecError, load_spec

SWEEP = """name: ssl
data: {{corpus: synthetic, features: ssl, {data}}}
model: {{name: ssl_head}}
search: {{metric: val_uar, mode: max, trials: 1}}
"""


def _load(tmp_path: Path, data: str):
    path = tmp_path / "ssl.yaml"
    path.write_text(SWEEP.format(data=data))
    return load_spec(path)


def test_a_misspelt_ssl_model_names_the_key_the_line_and_the_valid_models(tmp_path) -> None:
    with pytest.raises(SpecError, match=r"ssl.yaml:2: data.ssl.model: unknown ssl model "
                                        r"'wavlm_bsae' \(did you mean 'wavlm_base'\?\)"):
        _load(tmp_path, "normalize: none, ssl: {model: wavlm_bsae, checkpoint: random}")


def test_every_problem_is_reported_at_once(tmp_path) -> None:
    with pytest.raises(SpecError) as err:
        _load(tmp_path, "ssl: {model: wavlm_bsae, checkpoint: random}")  # normalize: train
    assert "data.normalize" in str(err.value) and "data.ssl.model" in str(err.value)


def test_a_valid_ssl_section_loads(tmp_path) -> None:
    spec = _load(tmp_path, "normalize: none, ssl: {model: wavlm_base, checkpoint: random}")
    assert spec.base_config()["data"]["ssl"]["model"] == "wavlm_base"
