"""The training loop of one trial: every member (fold x seed) trained in lock-step, epoch by epoch.

`LockstepTrainer.run_epoch()` trains each active member one epoch, validates it, keeps its best
validation epoch (with the test metrics at that epoch) and returns one report whose keys are
spelled in trainables.names. See docs/design.md, "A trial: members trained in lock-step".
"""

from __future__ import annotations

import json
import logging
import math
import resource
import sys
from typing import Any

import numpy as np
import torch

from trainables.batching import MicroBatch, fold_stats
from trainables.config import member_pairs
from trainables.data.base import Fold, PreparedData
from trainables.distill_loss import build_teacher, load_teacher_states, teacher_state_for
from trainables.errors import ConfigError, TrainingError
from trainables.frozen import thaw
from trainables.members import VAL_KEYS, Member
from trainables.models.sample_noise import ghost_split_warning
from trainables.names import (
    DATA_SKIPPED_CLIPS,
    DONE,
    EPOCH,
    MEASURED_PEAK_KIND,
    MEMBER_RESULTS_JSON,
    MEMBER_ROWS_JSON,
    MEMBERS_ACTIVE,
    MEMBERS_COLLAPSED,
    OBJECTIVE,
    OBJECTIVE_STD,
    PEAK_CPU_RSS,
    PEAK_CUDA_ALLOCATED,
    SELECTABLE_METRICS,
    TRAIN_LOSS,
    VAL_UAR,
    mean_key,
    std_key,
)
from trainables.optim import choose_precision
from trainables.stats import mean_std
from trainables.trial_config import TrialConfig, as_trial_config

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """`train.device`: auto (cuda if available: the GPU Ray assigned is cuda:0) | cpu | cuda."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device", "cuda requested but no CUDA GPU is visible")
    if name not in ("cpu", "cuda"):
        raise ConfigError("train.device", f"unknown device {name!r}; valid: auto, cpu, cuda")
    return torch.device(name)


class LockstepTrainer:
    """All members of one trial, trained one epoch at a time (see the module docstring)."""

    def __init__(
        self, config: TrialConfig | dict[str, Any], data: PreparedData,
        device: torch.device | None = None
    ) -> None:
        self.config = as_trial_config(config)  # a plain dict (tests, benches): built here, once
        self.train = self.config.train
        runtime = self.config.runtime
        self.metric = runtime.get("metric", VAL_UAR)
        self.mode = runtime.get("mode", "max")
        if self.metric not in SELECTABLE_METRICS:
            raise ConfigError("runtime.metric", f"cannot select on {self.metric!r}; "
                                                f"valid: {', '.join(SELECTABLE_METRICS)}")
        if self.mode not in ("max", "min"):
            raise ConfigError("runtime.mode", f"mode must be max or min, not {self.mode!r}")
        if self.train.reweight and self.train.rebalance:  # e.g. both drawn by a search
            raise ConfigError("train.rebalance", "train.reweight and train.rebalance are both "
                                                 "on: the class imbalance would be corrected "
                                                 "twice; set one")
        if not data.folds or not self.train.seeds:
            raise ConfigError("train.seeds", "a trial needs at least one fold and one seed")
        self.data = data
        self.device = device if device is not None else resolve_device(self.train.device)
        self.precision = choose_precision(self.train.amp, self.device)
        batch = int(self.train.batch_size)
        self.micro = MicroBatch(min(batch, int(self.train.micro_batch or batch)))
        self.estimated_peak_bytes = runtime.get("estimated_peak_bytes")
        stats = {f.name: fold_stats(data, f.train) for f in data.folds}
        pairs = member_pairs(data.folds, self.train)
        teachers = self._teachers(pairs) if self.config.distill else [None] * len(pairs)
        self.members = [
            Member(i, fold, seed, self.config, data, self.device, self.precision, stats[fold.name],
                   teacher)
            for i, ((fold, seed), teacher) in enumerate(zip(pairs, teachers, strict=True))
        ]
        self.epoch = 0
        # racing over folds (trainable.py): stage `stage` trains only the members `training`
        # (None: every member), from epoch 1; members of earlier stages keep their results
        self.stage, self.training = 0, None
        self._ghost_warned = False
        self._warn_ghost_split()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def start_stage(self, stage: int, members: list[int]) -> None:
        """Racing: train the members with these indices next, from epoch 1 (trainable.py)."""
        self.stage, self.training, self.epoch = int(stage), [int(i) for i in members], 0

    def _trains(self, member: Member) -> bool:
        return member.active and (self.training is None or member.index in self.training)

    def _teachers(self, pairs: list[tuple[Fold, int]]) -> list[torch.nn.Module]:
        """One frozen teacher per member: the teacher checkpoint (read once) matched by fold and
        seed (see trainables/distill_loss.py)."""
        cfg = thaw(self.config.distill)
        states = load_teacher_states(cfg["teacher_checkpoint"])
        data = self.data
        return [build_teacher(cfg, teacher_state_for(states, fold.name, int(seed)),
                              data.n_features, data.n_classes, self.device)
                for fold, seed in pairs]

    def _warn_ghost_split(self) -> None:
        """Log once when the micro-batch (the planner's, or after OOM halving) splits BatchNorm's
        ghost batches (trainables/models/sample_noise.py)."""
        line = ghost_split_warning(self.members[0].model, self.micro.size,
                                   int(self.train.norm_batch))
        if line is not None and not self._ghost_warned:
            self._ghost_warned = True
            log.warning(line)

    @property
    def finished(self) -> bool:
        return self.epoch >= self.train.epochs or not any(map(self._trains, self.members))

    def run_epoch(self) -> dict[str, Any]:
        """Train every active member one epoch; return the epoch's report (trainables.names)."""
        if self.finished:
            raise TrainingError(f"the trial is already finished (epoch {self.epoch})")
        self.epoch += 1
        last = self.epoch >= self.train.epochs
        patience = int(self.train.collapse_patience)
        rows = [
            m.run_epoch(self.epoch, self.micro, self.metric, self.mode, patience, last)
            for m in self.members
            if self._trains(m)
        ]
        self._warn_ghost_split()  # an OOM may have halved the micro-batch this epoch
        report = self._report(rows)
        log.info(
            "epoch %d/%d: %s %.4f ± %.4f, objective %.4f, train_loss %.4f, active %d/%d, "
            "collapsed %d, micro_batch %d, %.1f s",
            self.epoch, self.train.epochs, self.metric, report[mean_key(self.metric)],
            report[std_key(self.metric)], report[OBJECTIVE], report[mean_key(TRAIN_LOSS)],
            report[MEMBERS_ACTIVE], len(self.members), report[MEMBERS_COLLAPSED],
            self.micro.size, sum(r["seconds"] for r in rows),
        )
        return report

    def _report(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """The epoch's report. Means and stds are over EVERY member (the whole trial): a member
        that stopped (collapsed) carries its last epoch's values forward. Why: averaging only the
        members still active would drop a collapsed fold from `<metric>_mean` and make its trial
        look better to ASHA than it is. `rows` (this epoch's trained members) go to the store."""
        report: dict[str, Any] = {EPOCH: self.epoch}
        latest = [m.history[-1] for m in self.members if m.history]  # this epoch's or carried
        for key in (*VAL_KEYS, TRAIN_LOSS):
            report[mean_key(key)], report[std_key(key)] = mean_std(r[key] for r in latest)
        bests = [m.best_metric for m in self.members if m.best_metric is not None]
        report[OBJECTIVE] = float(np.mean(bests)) if bests else float("nan")
        report[OBJECTIVE_STD] = mean_std(bests)[1]  # sample std; NaN for one member
        report[MEMBERS_ACTIVE] = sum(map(self._trains, self.members))
        report[MEMBERS_COLLAPSED] = sum(m.collapsed for m in self.members)
        report[MEMBER_ROWS_JSON] = json.dumps(rows)
        # members a racing stage has not reached yet have no history and no result
        report[MEMBER_RESULTS_JSON] = json.dumps([m.results() for m in self.members if m.history])
        report[DONE] = self.finished
        return report

    def runtime_info(self) -> dict[str, Any]:
        """How the trial ran: micro-batch, accumulation, OOM retries, device, peak memory."""
        if self.device.type == "cuda":
            measured = int(torch.cuda.max_memory_allocated(self.device))
            kind = PEAK_CUDA_ALLOCATED
        else:  # the process' peak resident set (ru_maxrss is KiB on Linux, bytes on macOS)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            measured = int(rss if sys.platform == "darwin" else rss * 1024)
            kind = PEAK_CPU_RSS
        batch = int(self.train.batch_size)
        return {
            "batch_size": batch,
            "micro_batch": self.micro.size,
            "accumulation": math.ceil(batch / self.micro.size),
            "oom_retries": self.micro.oom_retries,
            "oom_events": list(self.micro.events),
            "device": str(self.device),
            "precision": self.precision.name,
            DATA_SKIPPED_CLIPS: int(self.data.info.get(DATA_SKIPPED_CLIPS, 0)),
            "members": len(self.members),
            "measured_peak_bytes": measured,
            MEASURED_PEAK_KIND: kind,  # what `measured` is (names.py): never compare cpu_rss
            "estimated_peak_bytes": self.estimated_peak_bytes,
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue at the next epoch (tensors + plain Python values)."""
        return {
            "epoch": self.epoch,
            "stage": self.stage,
            "training": self.training,
            "micro": self.micro.state_dict(),
            "members": [m.state_dict() for m in self.members],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["members"]) != len(self.members):
            raise TrainingError(f"checkpoint has {len(state['members'])} members, "
                                f"this trial {len(self.members)}")
        for member, member_state in zip(self.members, state["members"], strict=True):
            member.load_state_dict(member_state)
        self.epoch = int(state["epoch"])
        self.stage, self.training = int(state.get("stage", 0)), state.get("training")
        # the restored micro-batch already survived this trial's OOMs; never grow it back
        saved = MicroBatch(0)
        saved.load_state_dict(state["micro"])
        saved.size = min(saved.size, self.micro.size)
        self.micro = saved
