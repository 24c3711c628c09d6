"""The command line as a user meets it: program name, --version, help on every argument, sizes
with units, --resume with nothing recorded, the grid/trials line, and a bad sweep file reported
before torch or Ray is imported (the real `python sweep.py` in a subprocess)."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest

from orchestrator.cli import SUBCOMMANDS, build_parser, main, program_name
from orchestrator.cluster import ClusterError, results_root_for
from orchestrator.sweepfile import load_spec_from_args

ROOT = Path(__file__).resolve().parents[2]

REPO = Path(__file__).resolve().parents[2]
SWEEP = """name: tiny
data: {corpus: synthetic, features: logmel, synthetic_utterances: 40, max_seconds: 1.0}
model: {name: transformer, layers: 1, d_model: 16, heads: 2, ff_dim: 16}
train: {epochs: 1}
search:
  trials: 2
  params:
    model.layers: {int: [1, 2]}
"""


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "sweep.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_version_and_program_name_of_the_real_command() -> None:
    run = _run("--version")
    assert run.returncode == 0 and run.stdout.strip() == f"sweep.py {version('sersweep')}"
    assert _run("plan", "--help").stdout.startswith("usage: sweep.py plan ")
    assert program_name("/opt/venv/bin/sersweep") == "sersweep"
    assert program_name("sweep.py") == "sweep.py"


def test_every_argument_of_every_subcommand_has_help() -> None:
    missing = []
    for name in ("run", *SUBCOMMANDS):
        for action in build_parser(name, "sersweep")._actions:
            if not (action.help or "").strip() or action.help == argparse.SUPPRESS:
                missing.append(f"{name}: {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_a_bad_sweep_file_is_reported_before_torch_and_ray_are_imported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SWEEP.replace("train: {epochs: 1}", "train: {epochs: 1, lrr: 0.1}"))
    probe = ("import sys; from orchestrator.cli import main; rc = main(sys.argv[1:]); "
             "print('heavy:', sorted(m for m in ('torch', 'ray', 'optuna') if m in sys.modules));"
             " sys.exit(rc)")
    run = subprocess.run([sys.executable, "-c", probe, str(bad)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "train.lrr: unknown key 'lrr'" in run.stderr and "did you mean 'lr'" in run.stderr
    assert "heavy: []" in run.stdout, run.stdout


def test_a_size_without_unit_is_refused_with_a_suggestion() -> None:
    run = _run("plan", "search_spaces/transformer.yaml", "--gpu-memory", "80")
    assert run.returncode == 2
    assert run.stderr.startswith("error: --gpu-memory: a size needs a unit")
    assert "80GiB" in run.stderr


def test_resume_with_nothing_recorded_says_where_it_looked(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text(SWEEP)
    rc = main([str(space), "--results", str(tmp_path / "r"), "--resume"])
    err = capsys.readouterr().err
    assert rc == 2 and "nothing to resume" in err and str(tmp_path / "r" / "tiny") in err


def test_a_grid_larger_than_trials_says_how_many_points_run(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    space = tmp_path / "grid.yaml"
    space.write_text(SWEEP.replace("  trials: 2\n", "  sampler: grid\n  trials: 2\n").replace(
        "model.layers: {int: [1, 2]}", "model.layers: {int: [1, 3]}\n"
        "    model.d_model: {choice: [16, 32]}"))
    load_spec_from_args(argparse.Namespace(space=str(space), overrides=[], trials=None,
                                           epochs=None))
    assert "grid has 6 points; running 2 (search.trials)" in capsys.readouterr().out


def test_an_unreachable_address_fails_in_seconds_with_a_message() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # A fresh process: ray_init does nothing where Ray is already up (other tests start it).
    code = ("from orchestrator.cluster import ray_init\n"
            f"ray_init('127.0.0.1:{port}', verbose=False)")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert time.monotonic() - started < 10
    assert done.returncode != 0
    assert "ClusterError" in done.stderr, done.stderr[-2000:]
    assert f"cannot reach the Ray cluster at '127.0.0.1:{port}'" in done.stderr
    assert "ray stop" not in done.stderr


def test_a_relative_results_root_is_absolute_and_refused_under_a_ray_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert results_root_for("results") == str(tmp_path.resolve() / "results")
    assert results_root_for("s3://bucket/r") == "s3://bucket/r"
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    with pytest.raises(ClusterError, match="relative, and this is a Ray job.*--results /abs"):
        results_root_for("results")
    assert results_root_for(str(tmp_path)) == str(tmp_path.resolve())


def test_plan_exits_1_when_a_config_cannot_fit(tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text(SWEEP)
    args = [str(space), "--samples", "2", "--set", f"data.cache_dir={tmp_path / 'cache'}"]
    assert main(["plan", *args]) == 0
    assert main(["plan", *args, "--set", "resources.memory_budget=1KB"]) == 1
    assert "DO NOT FIT" in capsys.readouterr().out


def test_the_resume_refusal_lists_the_changed_keys(tmp_path: Path) -> None:
    from orchestrator.runner import check_same_sweep
    from orchestrator.store import ResultStore, write_spec
    from orchestrator.sweepfile import SpecError, load_spec

    space = tmp_path / "tiny.yaml"
    space.write_text(SWEEP)
    store = ResultStore(str(tmp_path / "r"), "tiny")
    write_spec(store.sweep_dir, load_spec(space, epochs=1).as_dict())
    check_same_sweep(store, load_spec(space, epochs=1, trials=9))  # more trials: the same sweep
    with pytest.raises(SpecError) as err:
        check_same_sweep(store, load_spec(space, epochs=6))
    assert err.value.key == "train.epochs" and "(train.epochs: 1 -> 6)" in str(err.value)
    assert len(str(err.value)) < 300
