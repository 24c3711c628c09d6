"""results/<sweep>/baseline.parquet written by the store (orchestrator/store/baseline_table.py):
atomic, typed by schema.BASELINE_FIELDS, read back as the frame run_baseline computed; a full
disk is a StoreWriteError like every store write."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.baseline_run import write_sweep_baseline
from orchestrator.store import StoreWriteError
from orchestrator.store.baseline_table import read_baseline, write_baseline
from orchestrator.store.schema import BASELINE_FILE, BASELINE_SCHEMA
from orchestrator.sweepfile import load_spec
from tests.trainables.data.fixtures import SMALL_SYNTHETIC
from trainables.data import prepare_data
from trainables.egemaps_baseline import run_baseline


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """60 synthetic utterances (5 sessions): the prepared data and its baseline, built once."""
    cfg = {"corpus": "synthetic", "synthetic_utterances": SMALL_SYNTHETIC,
           "cache_dir": str(tmp_path_factory.mktemp("baseline_cache"))}
    data = prepare_data(cfg)
    return {"cfg": cfg, "data": data, "frame": run_baseline(cfg, {"seeds": [0, 1]}, data=data)}


def test_write_baseline_is_atomic_and_typed(small: dict, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "results" / "sweep"
    path = write_baseline(small["frame"], sweep_dir)
    assert path == str(sweep_dir / BASELINE_FILE)
    assert sorted(p.name for p in sweep_dir.iterdir()) == [BASELINE_FILE]  # no temp file left
    schema = pq.read_schema(path)
    assert schema.field("test_confusion").type == pa.list_(pa.list_(pa.int64()))
    assert schema.field("classes").type == pa.list_(pa.string())
    assert schema.field("test_uar").metadata[b"doc"]
    assert schema.remove_metadata().equals(BASELINE_SCHEMA.remove_metadata(),
                                           check_metadata=False)
    back = read_baseline(sweep_dir)
    assert back["test_confusion"][0] == small["frame"]["test_confusion"][0]
    assert back["classes"][0] == ["neutral", "happy", "sad", "angry"]
    # a rewrite replaces the file whole
    write_baseline(small["frame"].head(2), sweep_dir)
    assert len(read_baseline(sweep_dir / BASELINE_FILE)) == 2
    with pytest.raises(ValueError, match="columns"):
        write_baseline(small["frame"].drop(columns="test_uar"), sweep_dir)


def test_the_sweeps_baseline_goes_through_the_store(small: dict, tmp_path: Path) -> None:
    """`write_sweep_baseline` (a sweep's start, `sweep.py baseline`) writes the file the
    store's reader gives back as run_baseline computed it."""
    tiny = Path(__file__).parents[1] / "tiny_sweep.yaml"
    # the fixture's corpus and cache: openSMILE's functionals are read from the cache there
    spec = load_spec(tiny, overrides=[f"data.cache_dir={small['cfg']['cache_dir']}",
                                      f"data.synthetic_utterances={SMALL_SYNTHETIC}"])
    path, frame = write_sweep_baseline(spec, str(tmp_path / "sweep"), progress=None)
    assert path == str(tmp_path / "sweep" / BASELINE_FILE)
    assert frame.attrs["functionals_cache"] == "hit"  # the tiny sweep's front end is not its key
    pd.testing.assert_frame_equal(read_baseline(path).drop(columns="fit_seconds"),
                                  frame[[f.name for f in BASELINE_SCHEMA]]
                                  .drop(columns="fit_seconds"))


def test_an_unwritable_results_folder_is_a_store_write_error(small: dict,
                                                            tmp_path: Path) -> None:
    """Written by the store's atomic writer: a results path under a file fails as every store
    write does (StoreWriteError naming the file, exit 2), not with a bare OSError."""
    blocker = tmp_path / "results"
    blocker.write_text("a file where the results folder should be")
    with pytest.raises(StoreWriteError) as info:
        write_baseline(small["frame"], blocker / "sweep")
    assert BASELINE_FILE in str(info.value)
    assert blocker.read_text().startswith("a file")
