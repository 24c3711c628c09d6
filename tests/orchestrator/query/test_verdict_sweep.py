"""The verdict on a real tiny sweep (real Ray, Optuna, torch, Parquet): members record their test
set, the leaderboard counts test sets (not folds x seeds), and the end-of-sweep table fits 120
columns with the verdict words."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from orchestrator import cli, query
from orchestrator.query.paired import VERDICTS

TINY = str(Path(__file__).parents[1] / "tiny_sweep.yaml")


@pytest.mark.slow  # 3 trials x 3 folds x 2 seeds x 2 epochs: ~30-90 s on a loaded 2-core machine
def test_a_tiny_sweep_ranks_on_test_sets_and_prints_the_verdict(
        ray_local, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = [TINY, "--results", str(tmp_path), "--set", f"data.cache_dir={tmp_path / 'cache'}",
            "--set", "data.use_folds=3", "--set", "train.seeds=[0,1]"]
    assert cli.main(args) == cli.EXIT_OK
    out = capsys.readouterr().out
    members = pd.read_parquet(tmp_path / "tiny" / "members")
    assert members["test_set_id"].notna().all()
    assert members.groupby("fold")["test_set_id"].nunique().eq(1).all()  # seeds share it
    assert members["test_set_id"].nunique() == 3
    board = query.leaderboard(query.load(str(tmp_path / "tiny")))
    ranked = board[board["rank"].notna()]
    assert ranked["n_test_sets"].eq(3).all()
    others = ranked[ranked["vs_best_verdict"] != "#1"]
    assert others["vs_best_n"].eq(3).all() and others["vs_best_verdict"].isin(VERDICTS).all()
    summary = out.index("\nsweep tiny:")  # the end-of-sweep summary, then the leaderboard
    table = out[out.index("\nrank ", summary) + 1:]
    assert max(len(line) for line in table.splitlines()) <= 120
    assert "n=3" in table and "tied" not in table
    assert "#1 chosen on validation" in " ".join(table.split())
