"""The distill section of a sweep file, resolving the teacher, and distillation end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from orchestrator import cli
from orchestrator.store import ResultStore
from orchestrator.sweepfile import SpecError, load_spec
from orchestrator.teacher import resolve_teacher

DATA = {"corpus": "synthetic", "features": "logmel", "max_seconds": 0.5, "n_mels": 8,
        "use_folds": 1, "synthetic_utterances": 120}
TEACHER_MODEL = {"name": "transformer", "layers": 2, "d_model": 32, "heads": 2, "ff_dim": 32,
                 "head_hidden": [32], "dropout": 0.0}
STUDENT_MODEL = {"name": "transformer", "layers": 1, "d_model": 32, "heads": 2, "ff_dim": 16,
                 "head_hidden": [32], "dropout": 0.0}


def sweep_file(tmp_path: Path, name: str, **sections) -> Path:
    doc = {"name": name, "data": {**DATA, "cache_dir": str(tmp_path / "cache")},
           "model": STUDENT_MODEL, "train": {"epochs": 2, "seeds": [0], "lr": 3e-3},
           "search": {"sampler": "grid", "trials": 2, "scheduler": "none",
                      "params": {"train.lr": {"choice": [1e-3, 3e-3]}}},
           "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0}}
    doc.update(sections)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


TEACHER = {"results": "teacher", "pick": "best"}


def test_distill_section_gets_defaults(tmp_path: Path) -> None:
    spec = load_spec(sweep_file(tmp_path, "s", distill={"teacher": TEACHER, "mse_layers": 3}))
    assert spec.distill["mse_layers"] == 3 and spec.distill["temperature"] == 2.0
    assert spec.distill["teacher"]["pick"] == "best" and spec.distill["experiment"] is None


@pytest.mark.parametrize("distill, key, fragment", [
    ({"teacher": TEACHER, "temprature": 2.0}, "distill.temprature", "did you mean"),
    ({"teacher": TEACHER, "kd_weight": "high"}, "distill.kd_weight", "expected number"),
    ({"teacher": TEACHER, "mse_layers": 5}, "distill.mse_layers", "mse_layers <= 4"),
    ({"teacher": TEACHER, "temperature": 0}, "distill.temperature", "temperature > 0"),
    ({"teacher": TEACHER, "experiment": "5mse"}, "distill.experiment", "one of"),
    ({"temperature": 2.0}, "distill.teacher", "needs a teacher"),
    ({"teacher": {"results": "t", "pik": "best"}}, "distill.teacher.pik", "unknown key"),
    ({"teacher": {"pick": "best"}}, "distill.teacher.results", "results directory"),
    ("yes", "distill", "is a mapping"),
])
def test_bad_distill_values_are_refused_at_their_key(tmp_path: Path, distill, key: str,
                                                     fragment: str) -> None:
    with pytest.raises(SpecError) as err:
        load_spec(sweep_file(tmp_path, "s", distill=distill))
    assert err.value.key == key and fragment in err.value.message
    assert err.value.line is not None and err.value.file.endswith("s.yaml")


def test_distill_keys_are_searchable(tmp_path: Path) -> None:
    grid = ["kd", "1mse", "2mse", "3mse", "4mse", "nokd_4mse"]
    search = {"sampler": "grid", "trials": 6, "scheduler": "none",
              "params": {"distill.experiment": {"choice": grid},
                         "distill.kd_weight": {"choice": [0.5, 1.0]},
                         "distill.mse_layers": {"int": [1, 4]},
                         "distill.temperature": {"choice": [1.0, 4.0]}}}
    spec = load_spec(sweep_file(tmp_path, "s", distill={"teacher": TEACHER}, search=search))
    config = spec.config_for({"distill.experiment": "3mse", "distill.mse_layers": 2,
                              "distill.kd_weight": 0.5, "distill.temperature": 4.0})
    assert config["distill"] == {"experiment": "3mse", "mse_layers": 2, "kd_weight": 0.5,
                                 "temperature": 4.0}
    spec = load_spec(sweep_file(tmp_path, "s", distill={"teacher": TEACHER}, search=search),
                     overrides=["distill.kd_weight=0"])
    assert spec.distill["kd_weight"] == 0.0 and "distill.kd_weight" not in spec.param_keys()


@pytest.mark.parametrize("params, fragment", [
    ({"distill.experiment": {"choice": ["kd", "9mse"]}}, "one of"),
    ({"distill.mse_layers": {"int": [1, 6]}}, "mse_layers <= 4"),
    ({"distill.teacher": {"choice": ["a"]}}, "addresses nothing"),
])
def test_bad_searched_distill_keys(tmp_path: Path, params: dict, fragment: str) -> None:
    search = {"trials": 2, "params": params}
    with pytest.raises(SpecError) as err:
        load_spec(sweep_file(tmp_path, "s", distill={"teacher": TEACHER}, search=search))
    assert fragment in err.value.message and err.value.key.startswith("search.params.distill")


def test_searching_distill_needs_a_distill_section(tmp_path: Path) -> None:
    search = {"trials": 2, "params": {"distill.kd_weight": {"choice": [0.0, 1.0]}}}
    with pytest.raises(SpecError, match="no distill section"):
        load_spec(sweep_file(tmp_path, "s", search=search))


# --- resolve_teacher against a real Parquet store -------------------------------------------
def _store(root: Path, rows: list[dict], checkpoint: Path | None, data: dict | None = None):
    store = ResultStore(str(root), "teacher")
    config = {"data": data or {**DATA}, "model": TEACHER_MODEL, "train": {}}
    for row in rows:
        store.write_trial({"mode": "max", "config_json": json.dumps(config),
                           "checkpoint_path": str(checkpoint) if checkpoint else None, **row},
                          [], [])


def _checkpoint(tmp_path: Path) -> Path:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.save({"members": []}, folder / "trainer.pt")
    return folder


def _student_spec(tmp_path: Path, pick: str = "best"):
    return load_spec(sweep_file(tmp_path, "student",
                                distill={"teacher": {"results": "teacher", "pick": pick}}))


def test_resolve_teacher_picks_the_best_completed_trial(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path)
    _store(tmp_path, [{"trial_id": "a", "status": "completed", "objective": 0.4},
                      {"trial_id": "b", "status": "completed", "objective": 0.6},
                      {"trial_id": "c", "status": "pruned", "objective": 0.9}], ckpt)
    out = resolve_teacher(_student_spec(tmp_path), str(tmp_path))
    assert out["teacher_trial"] == "b" and out["teacher_sweep"] == "teacher"
    assert out["teacher_model"] == TEACHER_MODEL and out["teacher_checkpoint"] == str(ckpt)
    assert out["mse_layers"] == 2 and out["kd_weight"] == 1.0
    assert resolve_teacher(_student_spec(tmp_path, "a"), str(tmp_path))["teacher_trial"] == "a"


@pytest.mark.parametrize("case, fragment", [
    ("no_dir", "does not exist"),
    ("none_completed", "no completed trial"),
    ("unknown_id", "is not in the teacher sweep"),
    ("other_folds", "different data or folds"),
    ("no_checkpoint", "is missing"),
])
def test_resolve_teacher_refusals(tmp_path: Path, case: str, fragment: str) -> None:
    ckpt = _checkpoint(tmp_path)
    status = "failed" if case == "none_completed" else "completed"
    data = {**DATA, "folds": "by_speaker", "n_folds": 3} if case == "other_folds" else None
    if case != "no_dir":
        _store(tmp_path, [{"trial_id": "a", "status": status, "objective": 0.5}],
               tmp_path / "gone" if case == "no_checkpoint" else ckpt, data)
    spec = _student_spec(tmp_path, "zzz" if case == "unknown_id" else "best")
    with pytest.raises(SpecError) as err:
        resolve_teacher(spec, str(tmp_path))
    assert err.value.key.startswith("distill.teacher") and fragment in err.value.message


# --- end to end through sweep.py's main ----------------------------------------------------
def _hidden_gap(student_row: pd.Series, teacher_row: pd.Series, tmp_path: Path) -> float:
    """Mean MSE between the last 2 hiddens of the student's and the teacher's best models on the
    validation split (same widths: no projection needed)."""
    from trainables.data import prepare_data
    from trainables.models import build_model

    config = json.loads(student_row["config_json"])
    data = prepare_data(config["data"])
    fold = data.folds[0]
    x, lengths = data.features[fold.val], data.lengths[fold.val]
    mean = data.features[fold.train].mean(dim=(0, 1))
    std = data.features[fold.train].std(dim=(0, 1))
    x = (x - mean) / std  # approximately the "train" normalisation; identical for both models
    models = []
    for row, cfg in ((student_row, config["model"]),
                     (teacher_row, json.loads(teacher_row["config_json"])["model"])):
        state = torch.load(Path(row["checkpoint_path"]) / "trainer.pt", weights_only=True)
        model = build_model(cfg, n_features=data.n_features, n_classes=data.n_classes)
        model.load_state_dict(state["members"][0]["best_state"])
        models.append(model.eval())
    with torch.no_grad():
        (_, s), (_, t) = (m(x, lengths, return_hidden=True) for m in models)
    return float(sum(((s[-k] - t[-k]) ** 2).mean() for k in (1, 2)))


@pytest.mark.slow
def test_student_sweep_distils_from_the_teachers_best_trial(tmp_path: Path) -> None:
    results = tmp_path / "results"
    teacher = sweep_file(tmp_path, "teacher", model=TEACHER_MODEL,
                         train={"epochs": 4, "seeds": [0], "lr": 3e-3})
    assert cli.main([str(teacher), "--results", str(results)]) == 0
    search = {"sampler": "grid", "trials": 2, "scheduler": "none",
              "params": {"distill.mse_weight": {"choice": [0.0, 3.0]}}}
    student = sweep_file(tmp_path, "student", search=search,
                         train={"epochs": 4, "seeds": [0], "lr": 3e-3},
                         distill={"teacher": {"results": "teacher"}, "kd_weight": 0.0,
                                  "mse_layers": 2})
    assert cli.main([str(student), "--results", str(results)]) == 0
    t_trials = pd.read_parquet(results / "teacher" / "trials")
    best = t_trials.sort_values("objective").iloc[-1]
    s_trials = pd.read_parquet(results / "student" / "trials")
    assert (s_trials["teacher_sweep"] == "teacher").all()
    assert (s_trials["teacher_trial"] == best["trial_id"]).all()
    members = pd.read_parquet(results / "student" / "members")
    assert members["agreement_acc"].between(0, 1).all()
    for conf, n in zip(members["agreement_confusion"], members["n_test"], strict=True):
        assert np.asarray(json.loads(conf)).sum() == n
    gap = {float(r["param.distill.mse_weight"]): _hidden_gap(r, best, tmp_path)
           for _, r in s_trials.iterrows()}
    assert gap[3.0] < gap[0.0], gap


def test_multi_corpus_spec_checks_each_corpus_root(tmp_path: Path) -> None:
    data = {**DATA, "corpus": "multi", "corpora": [{"corpus": "synthetic"},
                                                   {"corpus": "meld", "root": "/no/such/dir"}]}
    with pytest.raises(SpecError) as err:
        load_spec(sweep_file(tmp_path, "s", data=data))
    assert err.value.key == "data.corpora.1.root" and "does not exist" in err.value.message
    data["corpora"] = [{"corpus": "synthetic", "name": "x/y"}]
    with pytest.raises(SpecError) as err:
        load_spec(sweep_file(tmp_path, "s", data=data))
    assert err.value.key == "data.corpora.0.name"
