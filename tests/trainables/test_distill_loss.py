"""Distillation: loss terms, the teacher per member, agreement, checkpoints (real torch, CPU)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainables.data import prepare_data
from trainables.distill_loss import (
    EXPERIMENTS,
    Distiller,
    effective,
    hidden_mse,
    kd_loss,
    make_projections,
    pair_hiddens,
)
from trainables.errors import ConfigError, TrainingError
from trainables.models import build_model
from trainables.train import LockstepTrainer

TEACHER = {"name": "transformer", "layers": 2, "d_model": 32, "heads": 2, "ff_dim": 32,
           "head_hidden": [32], "dropout": 0.0}
STUDENT = {"name": "transformer", "layers": 1, "d_model": 16, "heads": 2, "ff_dim": 16,
           "head_hidden": [32], "dropout": 0.0}


def test_kd_term_is_zero_when_the_student_matches_the_teacher() -> None:
    logits = torch.randn(5, 4)
    assert torch.allclose(kd_loss(logits, logits.clone(), 2.0), torch.zeros(5), atol=1e-6)
    other = torch.randn(5, 4)
    loss = kd_loss(other, logits, 3.0)
    p_t = F.softmax(logits / 3.0, dim=1)
    expected = (p_t * (p_t.log() - F.log_softmax(other / 3.0, dim=1))).sum(1) * 9.0
    assert loss.shape == (5,) and (loss > 0).all() and torch.allclose(loss, expected, atol=1e-5)


def test_projections_map_student_width_to_teacher_width() -> None:
    maps = make_projections([16, 32], [32, 32])
    assert isinstance(maps[0], nn.Linear) and maps[0].weight.shape == (32, 16)
    assert isinstance(maps[1], nn.Identity)
    pairs = [(torch.randn(3, 16), torch.randn(3, 32)), (torch.randn(3, 32), torch.randn(3, 32))]
    assert hidden_mse(pairs, maps).shape == (3,)
    same = [(t, t) for _, t in pairs[1:]]
    assert torch.allclose(hidden_mse(same, maps[1:]), torch.zeros(3))


def test_mse_layers_are_counted_from_the_input_side_and_refuse_too_many() -> None:
    student = [torch.full((2, 1), float(i)) for i in range(3)]
    teacher = [torch.full((2, 1), 10.0 + i) for i in range(5)]
    pairs = pair_hiddens(student, teacher, 2)  # the first two: input side
    assert [(float(s[0]), float(t[0])) for s, t in pairs] == [(0.0, 10.0), (1.0, 11.0)]
    pairs = pair_hiddens(student, teacher, [2, -1])  # explicit; -1 counts from each one's end
    assert [(float(s[0]), float(t[0])) for s, t in pairs] == [(2.0, 12.0), (2.0, 14.0)]
    assert pair_hiddens(student, teacher, 0) == [] == pair_hiddens(student, teacher, [])
    for bad in (4, [3]):
        with pytest.raises(ConfigError) as err:
            pair_hiddens(student, teacher, bad)
        assert err.value.key == "distill.mse_layers" and "3 hidden layers" in str(err.value)


def test_1mse_hits_the_first_input_side_block() -> None:
    """Issue 13: "1mse" used to match only the last hidden (the head's); it is the first."""
    teacher, student = _model(TEACHER, 0).eval(), _model(STUDENT, 1)
    x, lengths = torch.randn(4, 12, 8), torch.full((4,), 12)
    d = Distiller({"experiment": "1mse"}, teacher, student, (x[:2], lengths[:2]))
    assert d.layers == [0] and d.widths == [(16, 32)]  # the input projection: d_model 16 -> 32
    logits, hiddens = student(x, lengths, return_hidden=True)
    loss = d.extra_loss(x, lengths, logits, hiddens).sum()
    student.zero_grad()
    d.projections.zero_grad()
    (loss - d.kd_weight * kd_loss(logits, d.teacher_forward(x, lengths)[0],
                                  d.temperature).sum()).backward()
    # the MSE reaches the input projection, and nothing of the head
    assert student.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in student.head.parameters())


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiments_override_kd_weight_and_mse_layers(name: str) -> None:
    cfg = effective({"experiment": name, "kd_weight": 0.5, "mse_layers": 1})
    kd_on, layers = EXPERIMENTS[name]
    assert cfg["mse_layers"] == layers and (cfg["kd_weight"] == 0.5) == kd_on
    assert layers == list(range(len(layers)))  # explicit, from the input side
    assert (cfg["kd_weight"] == 0.0) == (not kd_on)


def test_unknown_experiment_and_bad_values_name_the_key() -> None:
    for cfg, key in (({"experiment": "5mse"}, "distill.experiment"),
                     ({"mse_layers": 5}, "distill.mse_layers"),
                     ({"mse_layers": [0, 0]}, "distill.mse_layers"),
                     ({"mse_layers": [0.5]}, "distill.mse_layers"),
                     ({"temperature": 0}, "distill.temperature")):
        with pytest.raises(ConfigError) as err:
            effective(cfg)
        assert err.value.key == key


def _model(cfg: dict, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(cfg, n_features=8, n_classes=4)


def test_distiller_loss_is_zero_for_a_student_identical_to_its_teacher() -> None:
    teacher = _model(TEACHER, 0).eval()
    student = copy.deepcopy(teacher).eval()
    x, lengths = torch.randn(6, 12, 8), torch.full((6,), 12)
    cfg = {"kd_weight": 1.0, "mse_weight": 1.0, "mse_layers": 3}
    d = Distiller(cfg, teacher, student, (x[:2], lengths[:2]))
    assert all(isinstance(m, nn.Identity) for m in d.projections)
    assert "teacher" not in dict(d.named_children())  # frozen, not trained, not checkpointed
    logits, hiddens = student(x, lengths, return_hidden=True)
    assert torch.allclose(d.extra_loss(x, lengths, logits, hiddens), torch.zeros(6), atol=1e-5)
    assert d.hidden_gap(student, x, lengths, 3) == pytest.approx(0.0, abs=1e-8)
    assert d.hidden_gap(_model(TEACHER, 5).eval(), x, lengths, 3) > 0
    smaller = Distiller(cfg, teacher, _model(STUDENT, 1), (x[:2], lengths[:2]))
    # input, encoder 1 (student 16 wide), then the student's head hidden vs teacher layer 2
    assert smaller.widths == [(16, 32), (16, 32), (32, 32)]
    assert sum(isinstance(m, nn.Linear) for m in smaller.projections) == 2


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.mktemp("cache")
    return prepare_data({"corpus": "synthetic", "synthetic_utterances": 120, "max_seconds": 0.5,
                         "use_folds": 1, "n_mels": 8, "cache_dir": str(cache)})


@pytest.fixture(scope="module")
def teacher_checkpoint(data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    trainer = LockstepTrainer({"model": TEACHER, "train": {"epochs": 2, "seeds": [0, 1],
                                                           "lr": 3e-3}}, data)
    while not trainer.finished:
        trainer.run_epoch()
    path = tmp_path_factory.mktemp("teacher") / "trainer.pt"
    torch.save(trainer.state_dict(), path)
    return path


def _student(data, checkpoint: Path, **distill) -> LockstepTrainer:
    cfg = {"teacher_model": TEACHER, "teacher_checkpoint": str(checkpoint), **distill}
    return LockstepTrainer({"model": STUDENT, "distill": cfg,
                            # cpu: fp32 everywhere, so micro-batched losses match exactly
                            "train": {"epochs": 2, "seeds": [1, 7], "lr": 3e-3,
                                      "device": "cpu"}}, data)


def test_members_report_agreement_with_their_teacher(data, teacher_checkpoint: Path) -> None:
    trainer = _student(data, teacher_checkpoint, mse_layers=2)
    while not trainer.finished:
        report = trainer.run_epoch()
    for m, result in zip(trainer.members, json.loads(report["member_results_json"]), strict=True):
        conf = np.asarray(result["agreement_confusion"])
        assert conf.shape == (4, 4) and conf.sum() == result["n_test"]
        assert result["agreement_acc"] == pytest.approx(np.trace(conf) / conf.sum())
        # rows are the teacher's predictions: recompute them from the teacher itself
        _, pred = m.predict(m.test_idx, trainer.micro, 0, m.distiller.teacher)
        assert (conf.sum(axis=1) == np.bincount(pred, minlength=4)).all()
    # seed 1 has its own teacher member; seed 7 falls back to the fold's first seed (0)
    state = torch.load(teacher_checkpoint, weights_only=True)
    by_seed = {s["seed"]: s["best_state"] for s in state["members"]}
    for member, seed in zip(trainer.members, (1, 0), strict=True):
        got = member.distiller.teacher.state_dict()
        assert all(torch.equal(got[k], by_seed[seed][k]) for k in got)


def test_micro_batching_gives_the_full_batch_loss(data, teacher_checkpoint: Path) -> None:
    a, b = (_student(data, teacher_checkpoint, mse_layers=3) for _ in range(2))
    idx = a.members[0].train_idx[:24]
    loss_full = a.members[0].backward(idx, 24)
    loss_micro = b.members[0].backward(idx, 5)
    assert float(loss_full) == pytest.approx(float(loss_micro), rel=1e-5)
    for pa, pb in zip(a.members[0].trained.parameters(), b.members[0].trained.parameters(),
                      strict=True):
        assert pa.grad is not None and torch.allclose(pa.grad, pb.grad, atol=1e-6)


def test_checkpoint_restores_the_projections(data, teacher_checkpoint: Path) -> None:
    trainer = _student(data, teacher_checkpoint, mse_layers=3)
    trainer.run_epoch()
    state = trainer.state_dict()
    again = _student(data, teacher_checkpoint, mse_layers=3)
    again.load_state_dict(state)
    for m, n in zip(trainer.members, again.members, strict=True):
        saved, restored = m.distiller.state_dict(), n.distiller.state_dict()
        assert saved and all(torch.equal(saved[k], restored[k]) for k in saved)
    assert again.run_epoch()["epoch"] == 2


def test_a_teacher_without_the_students_fold_is_refused(data, tmp_path: Path) -> None:
    trainer = LockstepTrainer({"model": TEACHER, "train": {"epochs": 1}}, data)
    trainer.run_epoch()
    state = trainer.state_dict()
    state["members"][0]["fold"] = "another_fold"
    torch.save(state, tmp_path / "trainer.pt")
    with pytest.raises(TrainingError, match="no member for fold"):
        _student(data, tmp_path)
