"""An ssl_head sweep through the command line (real Ray, Optuna, Parquet) on a tiny random-init
encoder: the encoder runs once, in the driver; the trials read its cache."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from orchestrator import cli

SWEEP = """\
name: tiny_ssl
data:
  corpus: synthetic
  synthetic_utterances: 40
  features: ssl
  normalize: none
  max_seconds: 1.5
  use_folds: 1
  ssl: {model: wavlm_base_plus, checkpoint: random, arch: tiny}
model: {name: ssl_head, proj_dim: 16, head_hidden: [16], attention_dim: 8}
train: {epochs: 2, batch_size: 16, seeds: [0]}
search:
  baseline: false
  metric: val_uar
  trials: 2
  scheduler: {type: none}
  params:
    model.layer: {choice: [null, 0, 2]}
    model.pooling: {choice: [mean, attentive]}
resources: {cpus_per_trial: 1, gpus_per_trial: 0}
"""


@pytest.mark.slow  # Ray start + extraction + 2 trials: ~2 min on 2 heavily shared cores
def test_ssl_head_sweep_extracts_once_and_trains_every_trial(
    ray_local, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    space = tmp_path / "tiny_ssl.yaml"
    space.write_text(SWEEP)
    cache = tmp_path / "cache"
    args = [str(space), "--results", str(tmp_path / "results"), "--set",
            f"data.cache_dir={cache}"]
    assert cli.main(args) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "ssl wavlm_base_plus: extracting 3 hidden states" in out
    trials = pd.read_parquet(tmp_path / "results" / "tiny_ssl" / "trials")
    assert len(trials) == 2 and set(trials.status) == {"completed"}
    assert trials["objective"].between(0, 1).all()
    assert set(trials["param.model.pooling"]) <= {"mean", "attentive"}
    (extracted,) = (cache / "ssl").iterdir()  # one extraction for the whole sweep
    npy = extracted / "features.npy"
    mtime = npy.stat().st_mtime_ns

    assert cli.main(["plan", str(space), "--set", f"data.cache_dir={cache}"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "ssl cache hit" in out or "cache hit" in out
    assert list((cache / "ssl").iterdir()) == [extracted] and npy.stat().st_mtime_ns == mtime
