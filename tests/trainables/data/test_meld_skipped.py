"""Issue 13: MELD's skipped-clip count survives the feature cache and reaches the trial's
runtime info (the trials table's `data_skipped_clips`)."""

from __future__ import annotations

import warnings

from trainables.data import prepare_data
from trainables.names import DATA_SKIPPED_CLIPS


def test_skipped_count_on_cache_miss_and_hit(data_dirs: dict, tmp_path) -> None:
    cfg = {"corpus": "meld", "root": str(data_dirs["meld"]), "features": "logmel",
           "folds": "official", "max_seconds": 1.0, "cache_dir": str(tmp_path)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the one-time "skipped 2 of ..." notice
        miss = prepare_data(cfg)
        hit = prepare_data(cfg)
    assert (miss.info["cache"], hit.info["cache"]) == ("miss", "hit")
    # the fixture has one missing and one unreadable clip
    assert miss.info[DATA_SKIPPED_CLIPS] == hit.info[DATA_SKIPPED_CLIPS] == 2
