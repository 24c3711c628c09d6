"""LockstepTrainer on tiny random data with tiny test models (CPU, real torch)."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from trainables import names
from trainables.batching import class_weights, epoch_batches, steps_per_epoch
from trainables.config import TRAIN_DEFAULTS, with_defaults
from trainables.data.base import Fold, PreparedData
from trainables.errors import ConfigError, TrainingError
from trainables.metrics import compute_metrics
from trainables.models import MODELS
from trainables.optim import lr_factor
from trainables.train import LockstepTrainer

CPU = torch.device("cpu")


class TinyNet(nn.Module):
    """Masked mean of a per-frame projection -> linear; no batch statistics."""

    INPUTS = ("logmel",)

    def __init__(self, *, n_classes: int, n_features: int, hidden: int = 8,
                 dropout: float = 0.0, max_batch: int = 0, mode: str = "normal") -> None:
        super().__init__()
        self.proj = nn.Linear(n_features, hidden)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, n_classes)
        self.max_batch, self.mode = max_batch, mode
        self.sizes: list[int] = []  # every batch size forward was called with

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, return_hidden: bool = False):
        self.sizes.append(x.shape[0])
        if self.max_batch and x.shape[0] > self.max_batch:
            raise torch.OutOfMemoryError(f"fake OOM: batch {x.shape[0]} > {self.max_batch}")
        if self.mode == "oom":  # even one sample does not fit
            raise torch.OutOfMemoryError("fake OOM")
        if self.mode == "broken":
            raise ValueError("a bug in the model")
        mask = (torch.arange(x.shape[1])[None, :] < lengths[:, None]).float()[..., None]
        h = (torch.tanh(self.proj(x)) * mask).sum(1) / mask.sum(1)
        logits = self.out(self.drop(h))
        if self.mode == "one_class":  # always predicts class 0, whatever it learns
            logits = logits * 0 + torch.tensor([5.0] + [0.0] * (logits.shape[1] - 1))
        if self.mode == "nan":
            logits = logits * float("nan")
        return logits


@pytest.fixture(autouse=True)
def tiny_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(MODELS, "tiny", TinyNet)


def tiny_data(n: int = 96, steps: int = 10, feats: int = 6, normalize: str = "none",
              seed: int = 0) -> PreparedData:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 4
    lengths = torch.randint(5, steps + 1, (n,), generator=g)
    x = torch.randn(n, steps, feats, generator=g) * 2 + 3 + labels[:, None, None] * 0.7
    x = x * (torch.arange(steps)[None, :, None] < lengths[:, None, None])
    perm = torch.randperm(n, generator=g).numpy()
    parts = np.array_split(perm, 6)
    folds = [Fold(f"fold{k}", np.concatenate([parts[(k + j) % 6] for j in range(4)]),
                  parts[(k + 4) % 6], parts[(k + 5) % 6]) for k in range(2)]
    return PreparedData(features=x, lengths=lengths, labels=labels, classes=list("nhsa"),
                        ids=[str(i) for i in range(n)], speakers=["s"] * n, sessions=["1"] * n,
                        folds=folds, feature_kind="logmel", frame_rate=100.0, normalize=normalize)


def make_config(model: dict | None = None, runtime: dict | None = None, **train) -> dict:
    # collapse_margin -1: no near-chance rule (16 validation clips make it noisy); tests of
    # collapse set it (tests/trainables/test_whole_trial.py)
    base = {"epochs": 3, "batch_size": 16, "lr": 1e-2, "seeds": [0, 1], "amp": "off",
            "device": "cpu", "collapse_margin": -1.0}
    return {"data": {}, "model": {"name": "tiny", **(model or {})},
            "train": with_defaults({**base, **train}, TRAIN_DEFAULTS),
            "runtime": {"metric": "val_uar", "mode": "max", **(runtime or {})}}


def strip_time(report: dict) -> dict:
    """The report without wall-clock seconds (the only non-deterministic field)."""
    out = dict(report)
    rows = json.loads(out.pop(names.MEMBER_ROWS_JSON))
    out["rows"] = [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    return out


def test_report_keys_objective_and_test_at_best_epoch() -> None:
    data = tiny_data()
    trainer = LockstepTrainer(make_config(), data, CPU)
    reports = [trainer.run_epoch() for _ in range(3)]
    assert trainer.finished and reports[-1][names.DONE] and not reports[0][names.DONE]
    assert [r[names.EPOCH] for r in reports] == [1, 2, 3]
    last = reports[-1]
    for metric in ("acc", "uar", "f1_macro", "f1_weighted", "loss"):
        val = names.split_metric("val", metric)
        assert names.mean_key(val) in last and names.std_key(val) in last
    rows = json.loads(last[names.MEMBER_ROWS_JSON])
    assert [(r["member"], r["fold"], r["seed"]) for r in rows] == [
        (0, "fold0", 0), (1, "fold0", 1), (2, "fold1", 0), (3, "fold1", 1)]
    assert last["val_uar_mean"] == pytest.approx(np.mean([r["val_uar"] for r in rows]))
    assert last["train_loss_std"] == pytest.approx(np.std([r["train_loss"] for r in rows], ddof=1))
    assert last[names.MEMBERS_ACTIVE] == 0 and last[names.MEMBERS_COLLAPSED] == 0
    every_row = [r for rep in reports for r in json.loads(rep[names.MEMBER_ROWS_JSON])]
    best = [max(r["val_uar"] for r in every_row if r["member"] == m) for m in range(4)]
    assert last[names.OBJECTIVE] == pytest.approx(np.mean(best))
    # the test metrics are those of each member's best-validation weights, recomputed here
    results = json.loads(last[names.MEMBER_RESULTS_JSON])
    for member, res in zip(trainer.members, results, strict=True):
        model = TinyNet(n_classes=4, n_features=6)
        model.load_state_dict(member.best_state)
        model.eval()
        idx = torch.as_tensor(member.fold.test)
        with torch.no_grad():
            pred = model(data.features[idx], data.lengths[idx]).argmax(1).numpy()
        want = compute_metrics(data.labels[idx].numpy(), pred, 4)
        assert res["test_uar"] == pytest.approx(want["uar"])
        assert res["test_confusion"] == want["confusion"] and res["n_test"] == len(idx)
        assert res["val_uar"] == pytest.approx(member.best_metric)
        assert res["stopped_epoch"] == 3 and res["collapsed"] is False


def test_training_learns_and_is_reproducible() -> None:
    cfg = make_config(model={"dropout": 0.2}, rebalance=True, epochs=4)
    a, b = (LockstepTrainer(cfg, tiny_data(), CPU) for _ in range(2))
    ra = [strip_time(a.run_epoch()) for _ in range(4)]
    rb = [strip_time(b.run_epoch()) for _ in range(4)]
    assert ra == rb
    assert ra[-1]["train_loss_mean"] < ra[0]["train_loss_mean"]
    other = LockstepTrainer(make_config(model={"dropout": 0.2}, rebalance=True, epochs=4,
                                        seeds=[5, 6]), tiny_data(), CPU)
    assert strip_time(other.run_epoch())["rows"] != ra[0]["rows"]


@pytest.mark.parametrize("reweight", [False, True])
def test_micro_batches_accumulate_to_the_full_batch_gradient(reweight: bool) -> None:
    data = tiny_data()
    grads = {}
    for micro in (32, 8, 5):  # 5 -> 7 uneven micro-batches of 4 or 5
        trainer = LockstepTrainer(make_config(batch_size=32, micro_batch=micro,
                                              reweight=reweight), data, CPU)
        member = trainer.members[0]
        idx = torch.as_tensor(member.fold.train[:32])
        loss = member.backward(idx, micro)
        assert len(member.model.sizes) == math.ceil(32 / micro)
        grads[micro] = (float(loss), [p.grad.clone() for p in member.model.parameters()])
    for micro in (8, 5):
        assert grads[micro][0] == pytest.approx(grads[32][0], rel=1e-5)
        for g, g32 in zip(grads[micro][1], grads[32][1], strict=True):
            torch.testing.assert_close(g, g32, rtol=1e-5, atol=1e-6)


def test_oom_halves_the_micro_batch_and_redoes_the_step() -> None:
    data = tiny_data()
    cfg = make_config(model={"max_batch": 8}, batch_size=32, epochs=1, seeds=[0])
    trainer = LockstepTrainer(cfg, data, CPU)
    trainer.run_epoch()
    first = trainer.members[0]
    assert first.model.sizes[:3] == [32, 16, 8]
    assert [(e["from"], e["to"]) for e in trainer.micro.events] == [(32, 16), (16, 8)]
    info = trainer.runtime_info()
    assert (info["oom_retries"], info["micro_batch"], info["accumulation"]) == (2, 8, 4)
    assert info["measured_peak_bytes"] > 0
    for m in trainer.members:
        assert m.samples_seen == len(m.fold.train)
        assert max(m.model.sizes[3:] if m is first else m.model.sizes) <= 8
    # no data lost: the same results as a run planned at micro-batch 8 from the start
    planned = LockstepTrainer(make_config(model={"max_batch": 8}, batch_size=32, epochs=1,
                                          seeds=[0], micro_batch=8), data, CPU)
    rep = planned.run_epoch()
    assert json.loads(rep[names.MEMBER_RESULTS_JSON]) == [m.results() for m in trainer.members]


def test_oom_at_micro_batch_one_and_other_errors() -> None:
    cfg = make_config(model={"mode": "oom"}, micro_batch=2, seeds=[0])
    trainer = LockstepTrainer(cfg, tiny_data(), CPU)
    with pytest.raises(TrainingError, match="out of memory at micro-batch 1") as info:
        trainer.run_epoch()
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)
    assert trainer.members[0].model.sizes == [2, 1]  # micro 2 fails, then micro 1 fails
    broken = LockstepTrainer(make_config(model={"mode": "broken"}), tiny_data(), CPU)
    with pytest.raises(ValueError, match="a bug in the model"):
        broken.run_epoch()
    assert broken.micro.oom_retries == 0


def test_non_finite_loss_fails_the_trial() -> None:
    trainer = LockstepTrainer(make_config(model={"mode": "nan"}), tiny_data(), CPU)
    with pytest.raises(TrainingError, match=r"non-finite loss .*member 0 .*epoch 1"):
        trainer.run_epoch()


def test_members_collapsed_to_one_class_are_stopped() -> None:
    cfg = make_config(model={"mode": "one_class"}, epochs=10, collapse_patience=2)
    trainer = LockstepTrainer(cfg, tiny_data(), CPU)
    first = trainer.run_epoch()
    assert first[names.MEMBERS_ACTIVE] == 4 and not first[names.DONE]
    second = trainer.run_epoch()
    assert trainer.finished and second[names.DONE] and trainer.epoch == 2
    assert second[names.MEMBERS_COLLAPSED] == 4 and second[names.MEMBERS_ACTIVE] == 0
    assert second[names.OBJECTIVE] == pytest.approx(0.25)
    rows = json.loads(second[names.MEMBER_ROWS_JSON])
    assert all(r["collapsed"] and not r["active"] for r in rows)
    results = json.loads(second[names.MEMBER_RESULTS_JSON])
    assert all(r["collapsed"] and r["stopped_epoch"] == 2 for r in results)
    with pytest.raises(TrainingError, match="already finished"):
        trainer.run_epoch()


def test_state_dict_restores_and_continues_identically() -> None:
    cfg = make_config(model={"dropout": 0.3}, rebalance=True, optimizer="sgd",
                      warmup_epochs=1)
    straight = LockstepTrainer(cfg, tiny_data(), CPU)
    want = [strip_time(straight.run_epoch()) for _ in range(3)]
    first = LockstepTrainer(cfg, tiny_data(), CPU)
    assert [strip_time(first.run_epoch()) for _ in range(2)] == want[:2]
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = LockstepTrainer(cfg, tiny_data(), CPU)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.epoch == 2 and not resumed.finished
    assert strip_time(resumed.run_epoch()) == want[2]


def test_selection_by_val_loss_min() -> None:
    trainer = LockstepTrainer(make_config(runtime={"metric": "val_loss", "mode": "min"}),
                              tiny_data(), CPU)
    for _ in range(3):
        trainer.run_epoch()
    for m in trainer.members:
        losses = [r["val_loss"] for r in m.history]
        assert m.best_epoch == 1 + int(np.argmin(losses))
    with pytest.raises(ConfigError, match="runtime.metric"):
        LockstepTrainer(make_config(runtime={"metric": "test_uar"}), tiny_data(), CPU)


def test_train_normalisation_uses_the_fold_training_split() -> None:
    data = tiny_data(normalize="train")
    trainer = LockstepTrainer(make_config(epochs=1), data, CPU)
    member = trainer.members[2]
    x, lengths, _ = member.inputs(torch.as_tensor(member.fold.train))
    valid = torch.arange(x.shape[1])[None, :] < lengths[:, None]
    torch.testing.assert_close(x[valid].mean(0), torch.zeros(6), atol=1e-4, rtol=0)
    torch.testing.assert_close(x[valid].std(0, correction=0), torch.ones(6), atol=1e-4, rtol=0)
    assert torch.all(x[~valid] == 0)
    assert math.isfinite(trainer.run_epoch()["val_uar_mean"])


def test_sgd_and_cpu_autocast_train() -> None:
    trainer = LockstepTrainer(make_config(optimizer="sgd", amp="on", epochs=1), tiny_data(), CPU)
    assert trainer.runtime_info()["precision"] == "bfloat16"
    assert math.isfinite(trainer.run_epoch()["train_loss_mean"])


def test_warmup_then_cosine_per_step() -> None:
    f = lr_factor(steps_per_epoch=4, epochs=3, warmup_epochs=1, schedule="cosine")
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f(4) == pytest.approx(1.0) and f(8) == pytest.approx(0.5)
    assert f(11) < f(10) < f(9) < 0.5
    constant = lr_factor(steps_per_epoch=4, epochs=3, warmup_epochs=0, schedule="constant")
    assert {constant(s) for s in range(12)} == {1.0}


def test_batching_balances_and_covers() -> None:
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    idx = torch.arange(100)
    w = class_weights(labels, idx, 4)
    assert w[3] == 0 and (w[:3] * torch.tensor([60.0, 30, 10])).tolist() == pytest.approx(
        [100 / 3] * 3)
    g = torch.Generator().manual_seed(0)
    sample_w = w[labels].double()
    drawn = torch.cat([b for _ in range(20) for b in epoch_batches(idx, 16, g, sample_w)])
    share = torch.bincount(labels[drawn], minlength=3).float() / drawn.numel()
    torch.testing.assert_close(share[:3], torch.full((3,), 1 / 3), atol=0.03, rtol=0)
    batches = epoch_batches(torch.arange(33), 16, g)
    assert [b.numel() for b in batches] == [16, 17] and steps_per_epoch(33, 16) == 2
    assert sorted(torch.cat(batches).tolist()) == list(range(33))
