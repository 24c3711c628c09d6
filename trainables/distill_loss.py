"""Knowledge distillation: a frozen teacher per member, the KD and hidden-MSE loss terms.

The trial config's `distill` section (resolved in the driver by orchestrator/teacher.py) names the
teacher: its model config and the checkpoint (`trainer.pt` of the teacher trial, holding every
member's `best_state`). Each student member distils from the teacher member of the same fold and
seed (else the same fold's first seed). The student's loss is

    CE + kd_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))
       + mse_weight * sum_{i in layers} MSE(proj_i(student_hidden[i]), teacher_hidden[i])

`distill.mse_layers` names the matched hiddens explicitly, counted from the INPUT side (index 0 is
each model's first hidden: its input projection / first block; a model's `return_hidden` list is
ordered input -> head): an integer N means the first N (`[0, ..., N-1]`, the research's "N mse"),
a list gives the indices (negative ones count from the output end: -1 is the head's last hidden).
The named experiments map to those lists (EXPERIMENTS: 1mse = [0], ..., 4mse = [0, 1, 2, 3]).
Where widths differ a learned linear projection maps the student's width to the teacher's.
The projections belong to the member: its optimizer trains them, its checkpoint saves them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables.config import DISTILL_DEFAULTS, with_defaults
from trainables.errors import ConfigError, DataError, TrainingError
from trainables.metrics import confusion_matrix
from trainables.models import build_model

MAX_MSE_LAYERS = 4  # the largest integer `mse_layers` (a list may name any existing hiddens)
# The six settings of the research: (kd on?, hidden layers matched with MSE, from the input side).
EXPERIMENTS: dict[str, tuple[bool, list[int]]] = {
    "kd": (True, []),
    "1mse": (True, [0]),
    "2mse": (True, [0, 1]),
    "3mse": (True, [0, 1, 2]),
    "4mse": (True, [0, 1, 2, 3]),
    "nokd_4mse": (False, [0, 1, 2, 3]),
}


def layer_indices(mse_layers: int | list[int]) -> list[int]:
    """`distill.mse_layers` as explicit hidden indices: N -> [0, ..., N-1]; a list as given."""
    if isinstance(mse_layers, list | tuple):  # a frozen spec hands tuples
        return [int(i) for i in mse_layers]
    return list(range(int(mse_layers)))
AGREEMENT_ACC = "agreement_acc"  # keys of a member's results (MEMBER_RESULTS_JSON)
AGREEMENT_CONFUSION = "agreement_confusion"


def effective(distill_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The distill section with defaults, `experiment` applied (it overrides kd_weight and
    mse_layers; an experiment with KD on keeps the configured kd_weight, or 1.0 if that is 0)."""
    cfg = with_defaults(dict(distill_cfg), DISTILL_DEFAULTS)
    exp = cfg.get("experiment")
    if exp is not None:
        if exp not in EXPERIMENTS:
            raise ConfigError("distill.experiment", f"unknown experiment {exp!r}; valid: "
                              f"{', '.join(EXPERIMENTS)}")
        kd_on, layers = EXPERIMENTS[exp]
        cfg["kd_weight"] = (float(cfg["kd_weight"]) or 1.0) if kd_on else 0.0
        cfg["mse_layers"] = list(layers)
    for key in ("temperature", "kd_weight", "mse_weight"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"distill.{key}", f"expected a number >= 0, found {value!r}")
    if cfg["temperature"] <= 0:
        raise ConfigError("distill.temperature", f"expected > 0, found {cfg['temperature']!r}")
    layers = cfg["mse_layers"]
    is_int = isinstance(layers, int) and not isinstance(layers, bool)
    is_list = isinstance(layers, list | tuple) and all(
        isinstance(i, int) and not isinstance(i, bool) for i in layers)
    if not ((is_int and 0 <= layers <= MAX_MSE_LAYERS)
            or (is_list and len(set(layers)) == len(layers))):
        raise ConfigError("distill.mse_layers", f"expected an integer in [0, {MAX_MSE_LAYERS}] "
                          f"(the first N hiddens) or a list of distinct hidden indices counted "
                          f"from the input side, e.g. [0, 2], found {layers!r}")
    return cfg


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-sample T^2 * KL(softmax(teacher/T) || softmax(student/T)), shape (B,). The T^2 keeps
    the soft-label gradients on the scale of the CE's when T changes (Hinton et al., 2015)."""
    t = float(temperature)
    log_p_student = F.log_softmax(student.float() / t, dim=1)
    log_p_teacher = F.log_softmax(teacher.float() / t, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True).sum(dim=1)
    return kl * (t * t)


def pair_hiddens(
    student: list[torch.Tensor], teacher: list[torch.Tensor], layers: int | list[int]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The hiddens `layers` (layer_indices: counted from the input side) of both models, paired
    by index: [(s[i], t[i]) for i in layers]."""
    indices = layer_indices(layers)
    available = min(len(student), len(teacher))
    if any(not -available <= i < available for i in indices):
        raise ConfigError("distill.mse_layers", f"mse_layers={layers} but the student has "
                          f"{len(student)} hidden layers and the teacher {len(teacher)} "
                          f"(valid indices: 0..{available - 1}, or negative from the end)")
    return [(student[i], teacher[i]) for i in indices]


def make_projections(student_widths: list[int], teacher_widths: list[int]) -> nn.ModuleList:
    """One map per matched pair (from the end): Linear where widths differ, else Identity."""
    return nn.ModuleList(
        nn.Identity() if s == t else nn.Linear(s, t)
        for s, t in zip(student_widths, teacher_widths, strict=True)
    )


def hidden_mse(
    pairs: list[tuple[torch.Tensor, torch.Tensor]], projections: nn.ModuleList
) -> torch.Tensor:
    """Per-sample sum over the pairs of the mean squared error over features, shape (B,)."""
    total = torch.zeros(pairs[0][0].shape[0], device=pairs[0][0].device)
    for (s, t), proj in zip(pairs, projections, strict=True):
        total = total + (proj(s.float()) - t.float()).pow(2).mean(dim=1)
    return total


def load_teacher_states(path: str | Path) -> dict[tuple[str, int], dict[str, torch.Tensor]]:
    """{(fold, seed): best_state} of every member of the teacher checkpoint (a trainer.pt file or
    the checkpoint directory holding it); weights_only, so nothing arbitrary is unpickled."""
    path = Path(path)
    file = path / "trainer.pt" if path.is_dir() else path
    if not file.is_file():
        raise DataError(file, "teacher checkpoint not found; expected the teacher trial's "
                              "checkpoint directory holding trainer.pt (distill.teacher)")
    state = torch.load(file, map_location="cpu", weights_only=True)
    out = {}
    for member in state.get("members", []):
        if member.get("best_state") is not None:
            out[(str(member["fold"]), int(member["seed"]))] = member["best_state"]
    if not out:
        raise DataError(file, "the teacher checkpoint has no member with a best_state")
    return out


def teacher_state_for(
    states: Mapping[tuple[str, int], dict[str, torch.Tensor]], fold: str, seed: int
) -> dict[str, torch.Tensor]:
    """The teacher member of the same fold and seed, else the same fold's first seed."""
    if (fold, seed) in states:
        return states[(fold, seed)]
    seeds = sorted(s for f, s in states if f == fold)
    if not seeds:
        folds = sorted({f for f, _ in states})
        raise TrainingError(f"the teacher has no member for fold {fold!r} (it has {folds}); "
                            "teacher and student must use the same folds")
    return states[(fold, seeds[0])]


class Distiller(nn.Module):
    """The teacher of one member plus the student->teacher projections.

    Only `projections` is a registered submodule: the teacher is kept out of `parameters()` and
    `state_dict()` (frozen, reloaded from its own checkpoint), so the member's optimizer and
    checkpoint hold the projections alone.
    """

    def __init__(self, cfg: Mapping[str, Any], teacher: nn.Module, student: nn.Module,
                 probe: tuple[torch.Tensor, torch.Tensor]) -> None:
        super().__init__()
        self.cfg = effective(cfg)
        self.temperature = float(self.cfg["temperature"])
        self.kd_weight = float(self.cfg["kd_weight"])
        self.mse_weight = float(self.cfg["mse_weight"])
        self.layers = layer_indices(self.cfg["mse_layers"]) if self.mse_weight > 0 else []
        self.n_layers = len(self.layers)
        self.__dict__["teacher"] = teacher.eval().requires_grad_(False)  # not a submodule
        # the widths of the hiddens come from one real forward of both models (eval, no grad)
        was_training = student.training
        student.eval()
        with torch.no_grad():
            s_logits, s_hid = student(*probe, return_hidden=True)
            t_logits, t_hid = teacher(*probe, return_hidden=True)
        student.train(was_training)
        if s_logits.shape[1] != t_logits.shape[1]:
            raise ConfigError("distill.teacher", f"the teacher predicts {t_logits.shape[1]} "
                              f"classes, the student {s_logits.shape[1]}")
        pairs = pair_hiddens(s_hid, t_hid, self.layers)
        self.widths = [(int(s.shape[1]), int(t.shape[1])) for s, t in pairs]
        self.projections = make_projections([s for s, _ in self.widths],
                                            [t for _, t in self.widths])

    @property
    def needs_hiddens(self) -> bool:
        return self.n_layers > 0

    @torch.no_grad()
    def teacher_forward(self, x: torch.Tensor, lengths: torch.Tensor):
        return self.teacher(x, lengths, return_hidden=True)

    def extra_loss(self, x: torch.Tensor, lengths: torch.Tensor, logits: torch.Tensor,
                   hiddens: list[torch.Tensor] | None) -> torch.Tensor:
        """Per-sample distillation loss (B,) added to the member's CE (float32)."""
        t_logits, t_hid = self.teacher_forward(x, lengths)
        total = torch.zeros(logits.shape[0], device=logits.device)
        if self.kd_weight > 0:
            total = total + self.kd_weight * kd_loss(logits, t_logits, self.temperature)
        if self.n_layers > 0:
            pairs = pair_hiddens(hiddens or [], t_hid, self.layers)
            total = total + self.mse_weight * hidden_mse(pairs, self.projections)
        return total

    @torch.no_grad()
    def hidden_gap(self, student: nn.Module, x: torch.Tensor, lengths: torch.Tensor,
                   layers: int | list[int]) -> float:
        """Mean over samples of the summed per-layer MSE between the hiddens `layers`
        (layer_indices; projected where widths differ) of the student and the teacher."""
        _, s_hid = student(x, lengths, return_hidden=True)
        _, t_hid = self.teacher_forward(x, lengths)
        indices = layer_indices(layers)
        pairs = pair_hiddens(s_hid, t_hid, indices)
        trained = dict(zip(self.layers, self.projections, strict=True))
        maps = [trained.get(i, nn.Identity()) for i in indices]
        return float(hidden_mse(pairs, nn.ModuleList(maps)).mean())


def build_teacher(distill_cfg: Mapping[str, Any], state: dict[str, torch.Tensor],
                  n_features: int, n_classes: int, device: torch.device) -> nn.Module:
    """The teacher model of one member, its weights loaded strictly, on `device`, frozen."""
    model_cfg = distill_cfg.get("teacher_model")
    if not isinstance(model_cfg, Mapping) or "name" not in model_cfg:
        raise ConfigError("distill.teacher_model", "the driver did not resolve the teacher's "
                          "model config (orchestrator/teacher.py resolve_teacher)")
    teacher = build_model(copy.deepcopy(dict(model_cfg)), n_features=n_features,
                          n_classes=n_classes)
    try:
        teacher.load_state_dict(state)
    except RuntimeError as exc:
        raise TrainingError(f"the teacher checkpoint does not fit the teacher model "
                            f"{model_cfg['name']!r}: {exc}") from exc
    return teacher.to(device).eval().requires_grad_(False)


def agreement(teacher_pred: np.ndarray, student_pred: np.ndarray,
              n_classes: int) -> dict[str, Any]:
    """Accuracy of the student against the teacher's labels and the confusion matrix
    (rows = teacher's prediction, columns = student's)."""
    conf = confusion_matrix(teacher_pred, student_pred, n_classes)
    acc = float(np.trace(conf) / conf.sum()) if conf.sum() else float("nan")
    return {AGREEMENT_ACC: acc, AGREEMENT_CONFUSION: conf.tolist()}
