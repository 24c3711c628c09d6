"""The cold run's process pool (trainables/data/parallel.py): generation, featurizing and the
eGeMAPS functionals give on 2 worker processes exactly what they give in one process."""

from __future__ import annotations

import os
import re
import threading
import time
from concurrent.futures import CancelledError
from pathlib import Path

import numpy as np
import pytest
import torch

from trainables.data.extractor import CHUNK
from trainables.data.features import featurize_parallel, get_feature
from trainables.data.parallel import parallel_map
from trainables.data.synthetic import generate
from trainables.egemaps_baseline import compute_functionals, in_background


@pytest.fixture(scope="module")
def corpus() -> list:
    return generate(40, 11, workers=1)


def test_generation_identical_on_two_workers(corpus: list) -> None:
    pooled = generate(40, 11, workers=2)
    assert [u.id for u in pooled] == [u.id for u in corpus]
    assert [(u.label, u.speaker, u.session) for u in pooled] == [
        (u.label, u.speaker, u.session) for u in corpus]
    for a, b in zip(corpus, pooled):
        assert a.waveform.dtype == b.waveform.dtype == np.float32
        assert np.array_equal(a.waveform, b.waveform)


@pytest.mark.parametrize("kind", ["logmel", "mfcc"])
def test_featurizing_identical_on_two_workers(corpus: list, kind: str) -> None:
    # more than 2 batches of CHUNK and a short last one: the parts must cut where featurize does
    waves = [u.waveform[: 8000 + 97 * i] for i, u in
             enumerate(corpus * (2 * CHUNK // len(corpus) + 2))][: 2 * CHUNK + 7]
    cfg = {"features": kind, "max_seconds": 1.5, "n_mels": 32, "n_mfcc": 13}
    serial = get_feature(cfg).featurize(waves, cfg["max_seconds"])
    pooled = featurize_parallel(get_feature(cfg), cfg, waves, workers=2)
    assert pooled[0].shape == serial[0].shape and pooled[0].dtype == serial[0].dtype
    assert torch.equal(pooled[0], serial[0]) and torch.equal(pooled[1], serial[1])


def test_functionals_identical_on_two_workers(corpus: list) -> None:
    waves = [u.waveform for u in corpus[:20]] + [np.zeros(400, dtype=np.float32)]  # too short
    serial = compute_functionals(waves, workers=1)
    pooled = compute_functionals(waves, workers=2)
    assert serial.shape == (21, 88) and np.isnan(serial[-1]).any()
    assert np.array_equal(serial, pooled, equal_nan=True)


def _autogroup_nice() -> int | None:
    """The nice of the calling process's autogroup ("/autogroup-466 nice 0"), or None where the
    kernel shows none (no file, or a sandbox's empty one: CI's)."""
    autogroup = Path("/proc/self/autogroup")
    shown = re.search(r"nice\s+(-?\d+)", autogroup.read_text()) if autogroup.exists() else None
    return int(shown.group(1)) if shown else None


def _priority(_: object = None) -> tuple[int, bool, int]:
    """(nice of its session's autogroup, runs SCHED_IDLE, nice) of the calling process: the
    larger, the less CPU it gets beside others that want it (Linux shares the CPU between
    autogroups first; without autogroups, 0)."""
    group = _autogroup_nice() or 0
    idle = hasattr(os, "SCHED_IDLE") and os.sched_getscheduler(0) == os.SCHED_IDLE
    return group, idle, os.nice(0)


def test_background_workers_run_below_the_trials(ray_local) -> None:
    """The baseline beside the first trials takes only the CPU they leave idle: its workers
    run below a Ray worker (a trial: Ray starts them at nice 15, in the raylet's session), not
    at nice 10 above it, nor in the driver's session, which Linux's autogroups give as much CPU
    as the trials' session."""
    trial = ray_local.get(ray_local.remote(lambda: _priority())
                          .options(num_cpus=0).remote())
    assert parallel_map(_priority, [0, 0], workers=2) == [_priority()] * 2
    background = parallel_map(_priority, [0, 0], workers=2, background=True)
    assert all(worker > trial for worker in background), (background, trial)
    assert background[0][2] == 19
    if _autogroup_nice() is not None and trial[0] == 0:
        assert background[0][0] == 19
    from trainables.egemaps_baseline import _BACKGROUND

    with in_background():  # the baseline beside the trials: its extraction in the background
        assert _BACKGROUND.get() is not None
    assert _BACKGROUND.get() is None


def _mark(path: str) -> str:
    Path(path).touch()
    time.sleep(0.25)  # 40 items on 2 workers: 5 s in all
    return path


def test_a_set_stop_drops_the_items_not_started(tmp_path: Path) -> None:
    """Background workers are out of Ctrl-C's reach (a session of their own): an interrupted
    sweep stops its baseline through `stop`, which drops what has not started."""
    items = [str(tmp_path / f"{i}") for i in range(40)]
    stop, arrived = threading.Event(), []

    def done(k: int) -> None:
        arrived.append(k)
        if k == 2:
            stop.set()

    with pytest.raises(CancelledError, match="stopped with 2 of 40 items done"):
        parallel_map(_mark, items, workers=2, background=True, done=done, stop=stop)
    assert arrived == [1, 2]
    # what ran and was queued beside the first two; all 40 if the rest were not dropped (a
    # loaded machine may let the workers start a few more before the pool hears of the stop)
    assert len(list(tmp_path.iterdir())) < 30
    with pytest.raises(CancelledError, match="0 of 3"):  # set before: nothing runs
        parallel_map(int, ["1", "x", "2"], workers=1, stop=stop)


def test_a_worker_error_reaches_the_caller() -> None:
    with pytest.raises(ValueError, match="invalid literal"):
        parallel_map(int, ["1", "x", "2"], workers=2)


def test_a_normalize_choice_reuses_the_previous_variants_features(tmp_path) -> None:
    """A sweep searching data.normalize featurizes once: the next choice normalizes the
    features the previous one computed, and gets exactly what featurizing anew gives."""
    from trainables.data import prepare, prepare_data

    cfg = {"corpus": "synthetic", "synthetic_utterances": 40, "features": "logmel",
           "n_mels": 16, "max_seconds": 1.0, "downsample": 2, "cache_dir": str(tmp_path / "a")}
    prepare._BEFORE_NORMALIZE.clear()
    first = prepare_data({**cfg, "normalize": "train"})
    first.features.add_(1.0)  # what is kept for the next variant is not the tensor handed out
    second = prepare_data({**cfg, "normalize": "speaker"})
    other = prepare_data({**cfg, "normalize": "speaker", "downsample": 1})
    assert (first.info["features_reused"], second.info["features_reused"],
            other.info["features_reused"]) == (False, True, False)
    prepare._BEFORE_NORMALIZE.clear()
    fresh = prepare_data({**cfg, "normalize": "speaker", "cache_dir": str(tmp_path / "b")})
    assert not fresh.info["features_reused"]
    assert torch.equal(second.features, fresh.features)
    assert torch.equal(second.lengths, fresh.lengths)


HANG = """
import torch
from trainables.data.features import featurize_parallel, get_feature
from trainables.data.synthetic import generate
torch.set_num_threads(2)  # the parent's OpenMP pool in use before the fork (the sweep driver's)
x = torch.randn(1000, 1000)
(x @ x).sum(), torch.linspace(0, 1, 5_000_000).exp().sum()
waves = [u.waveform for u in generate(40, 1, workers=1)] * 4
cfg = {"features": "logmel", "max_seconds": 1.0}
featurize_parallel(get_feature(cfg), cfg, waves, workers=2)
print("featurized")
"""


def test_workers_do_not_hang_after_the_parent_used_torch_threads() -> None:
    """A forked worker running torch on several threads waits forever for the parent's OpenMP
    pool (it happened in `make demo`): the workers run torch on one thread."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[3]
    done = subprocess.run([sys.executable, "-c", HANG], cwd=root, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert done.returncode == 0 and "featurized" in done.stdout, done.stderr[-2000:]


ORPHAN = """
import os, time
from trainables.data.parallel import parallel_map

def _wait(_):
    os.write(1, f"{os.getpid()}\\n".encode())  # one write: the two workers' lines never mix
    time.sleep(120)

parallel_map(_wait, [0, 1], workers=2, background=True)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux: prctl and /proc")
def test_workers_die_with_a_killed_parent() -> None:
    """A driver killed with SIGKILL leaves no worker behind (a background one is in a session
    of its own: no terminal's signal reaches it)."""
    import signal
    import subprocess
    import sys

    from tests.reliability.drivers import alive

    root = Path(__file__).resolve().parents[3]
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN], cwd=root, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(root)})
    workers = [int(parent.stdout.readline()) for _ in range(2)]
    parent.send_signal(signal.SIGKILL)
    parent.wait()

    deadline = time.monotonic() + 30
    while any(map(alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in workers if alive(pid)]
    for pid in left:  # the old behaviour: clean up before failing
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers {left} outlived their killed parent"
