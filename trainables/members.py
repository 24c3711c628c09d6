"""One member of a trial (one fold x one seed): its model, optimizer, RNG and best epoch."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables.batching import (
    Inputs,
    MicroBatch,
    class_weights,
    epoch_batches,
    micro_chunks,
    steps_per_epoch,
)
from trainables.collapse import (
    DEGENERATE,
    SINGLE_CLASS,
    collapse_rule,
    epoch_collapse,
    first_judged_epoch,
    loss_improved,
    predictions_unchanged,
)
from trainables.data.base import Fold, PreparedData
from trainables.data.folds import test_set_id
from trainables.distill_loss import AGREEMENT_ACC, AGREEMENT_CONFUSION, Distiller, agreement
from trainables.errors import TrainingError
from trainables.frozen import thaw
from trainables.member_eval import MemberEvaluation
from trainables.memory.oom import retry_on_oom
from trainables.metrics import CONFUSION, UAR_BY_CORPUS, uar_by_group
from trainables.models import build_model
from trainables.models.sample_noise import sample_noise
from trainables.names import LOSS, SCALAR_METRICS, TRAIN_LOSS, VAL_METRICS, split_metric
from trainables.optim import Precision, build_optimizer, build_scheduler
from trainables.trial_config import TrialConfig

VAL_KEYS = VAL_METRICS  # what each epoch row and the best epoch hold


class Member(MemberEvaluation):
    """Trains, evaluates and keeps the best validation epoch of one fold x seed."""

    def __init__(
        self,
        index: int,
        fold: Fold,
        seed: int,
        config: TrialConfig,
        data: PreparedData,
        device: torch.device,
        precision: Precision,
        stats: tuple[Any, Any] | None,
        teacher: nn.Module | None = None,
    ) -> None:
        self.index, self.fold, self.seed = index, fold, int(seed)
        self.train_cfg = config.train
        self.norm_batch = int(self.train_cfg.norm_batch or 1)
        self.device, self.precision = device, precision
        self.n_classes = data.n_classes
        self.inputs = Inputs(data, device, stats)
        self._cuda = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=self._cuda):
            # the member's seed alone decides its initialisation and its later dropout draws
            torch.manual_seed(self.seed)
            model = build_model(
                thaw(config.model), n_features=data.n_features, n_classes=data.n_classes
            )
            self.model = model.to(device)
            # config.distill + a teacher: the projections are drawn from the member's seed too
            self.distiller: Distiller | None = None
            if teacher is not None:
                probe = self.inputs(torch.as_tensor(fold.train[:2], dtype=torch.int64))[:2]
                distiller = Distiller(thaw(config.distill), teacher, self.model, probe)
                self.distiller = distiller.to(device)
            self.rng_state = torch.get_rng_state()
            self.cuda_rng_state = torch.cuda.get_rng_state(device) if self._cuda else None
        self.generator = torch.Generator().manual_seed(self.seed)  # epoch order / sampling
        self.train_idx = torch.as_tensor(fold.train, dtype=torch.int64)
        self.val_idx = torch.as_tensor(fold.val, dtype=torch.int64)
        self.test_idx = torch.as_tensor(fold.test, dtype=torch.int64)
        self.test_set_id = test_set_id(data.ids, fold.test)  # the pairing unit (query/paired.py)
        cw = class_weights(data.labels, self.train_idx, data.n_classes)
        self.loss_weights = cw.to(device) if self.train_cfg.reweight else None
        self._cpu_weights = cw if self.train_cfg.reweight else None  # no per-step device read
        labels = data.labels[self.train_idx]
        self.sample_weights = cw[labels].double() if self.train_cfg.rebalance else None
        # what the optimizer trains and clips: the model, plus the distillation projections
        self.trained: nn.Module = (self.model if self.distiller is None
                                   else nn.ModuleList([self.model, self.distiller]))
        self.teacher_test_pred: np.ndarray | None = None  # the teacher is fixed: computed once
        self.optimizer = build_optimizer(self.trained, self.train_cfg)
        steps = steps_per_epoch(self.train_idx.numel(), self.train_cfg.batch_size)
        self.scheduler = build_scheduler(self.optimizer, self.train_cfg, steps)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision.scaler)
        self.best_metric: float | None = None
        self.best_epoch = 0
        self.best_val: dict[str, float] = {}
        self.best_state: dict[str, torch.Tensor] | None = None
        self.test: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.collapse_run = 0  # consecutive judged epochs whose val predictions were stuck
        self.unchanged_run = 0  # ... whose val predictions were those of the first judged epoch
        self.collapse_reason: str | None = None  # trainables/collapse.py, of the last epoch
        # val predictions at the first judged epoch (a tensor: checkpoints load weights_only)
        self.collapse_reference: torch.Tensor | None = None
        self.collapsed = False
        self.active = True
        self.stopped_epoch: int | None = None
        self.samples_seen = 0
        self.last_pred: np.ndarray | None = None  # argmax of the last evaluate()

    # -- one logical step -------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = self.precision.dtype
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def backward(self, idx: torch.Tensor, micro_batch: int, seed: int = 0) -> torch.Tensor:
        """Accumulate the gradients of the logical batch `idx` in micro-batches of at most
        `micro_batch`, cut on ghost-batch boundaries, with per-sample dropout drawn from `seed`
        (trainables/models/sample_noise.py): the result does not depend on `micro_batch`. Each
        micro-batch's loss is its summed (class-weighted) per-sample loss over the logical
        batch's total weight, so the accumulated gradient equals the full batch's.
        A distilling member adds the distiller's per-sample loss, averaged over the logical batch.
        Returns the logical batch's mean loss (a detached device tensor: no sync here)."""
        denom = float(idx.numel())
        distiller, n = self.distiller, float(idx.numel())
        if self._cpu_weights is not None:
            denom = float(self._cpu_weights[self.inputs.data.labels[idx]].sum())
        total = torch.zeros((), device=self.device)
        start = 0  # each chunk's position in the logical batch: its samples' dropout masks
        for chunk in micro_chunks(idx, micro_batch, self.norm_batch):
            x, lengths, y = self.inputs(chunk)
            with self._autocast(), sample_noise(seed, start, self.norm_batch):
                hiddens = None
                if distiller is not None and distiller.needs_hiddens:
                    logits, hiddens = self.model(x, lengths, return_hidden=True)
                else:
                    logits = self.model(x, lengths)
                extra = (distiller.extra_loss(x, lengths, logits, hiddens)
                         if distiller is not None else None)
            losses = F.cross_entropy(logits.float(), y, reduction="none")
            if self.loss_weights is not None:
                losses = losses * self.loss_weights[y]
            loss = losses.sum() / denom
            if extra is not None:
                loss = loss + extra.sum() / n
            self.scaler.scale(loss).backward()
            total += loss.detach()
            start += chunk.numel()
        return total

    def step(self) -> None:
        """Clip, step the optimizer (through the GradScaler under fp16) and the lr schedule."""
        if self.train_cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.trained.parameters(), self.train_cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def _logical_step(self, idx: torch.Tensor, mb: MicroBatch, epoch: int) -> torch.Tensor:
        def before_retry() -> None:  # the failed attempt's partial gradients and cached blocks
            self.optimizer.zero_grad(set_to_none=True)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

        # the step's dropout seed, from the member's RNG (run_epoch runs in _own_rng)
        seed = int(torch.randint(0, 2**31 - 1, ()))
        loss = retry_on_oom(lambda size: self.backward(idx, size, seed), mb, member=self.index,
                            epoch=epoch, phase="train", before_retry=before_retry)
        self.step()
        self.samples_seen += idx.numel()
        return loss

    # -- one epoch ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        """Run with this member's RNG state (dropout etc.) and save it back afterwards."""
        with torch.random.fork_rng(devices=self._cuda):
            torch.set_rng_state(self.rng_state)
            if self._cuda:
                torch.cuda.set_rng_state(self.cuda_rng_state, self.device)
            yield
            self.rng_state = torch.get_rng_state()
            if self._cuda:
                self.cuda_rng_state = torch.cuda.get_rng_state(self.device)

    def run_epoch(
        self, epoch: int, mb: MicroBatch, metric: str, mode: str, patience: int, last: bool
    ) -> dict[str, Any]:
        """Train one epoch, validate, update the best epoch (+ test), check collapse, stop after
        the `last` epoch -> this epoch's row (one element of MEMBER_ROWS_JSON)."""
        start = time.perf_counter()
        self.model.train()
        with self._own_rng():
            total = torch.zeros((), device=self.device)
            seen = 0
            batches = epoch_batches(
                self.train_idx, self.train_cfg.batch_size, self.generator, self.sample_weights
            )
            for idx in batches:
                total += self._logical_step(idx, mb, epoch) * idx.numel()
                seen += idx.numel()
            # sync point: the one host read of the training loss per member and epoch
            train_loss = float(total) / max(1, seen)
        val = self.evaluate("val", mb, epoch)
        # decided on the validation predictions now: _new_best's test pass replaces last_pred
        reason = self._stuck(epoch)
        for name, value in (("train", train_loss), ("val", val[split_metric("val", LOSS)])):
            if not math.isfinite(value):
                raise TrainingError(
                    f"non-finite loss ({name} loss = {value}) for member {self.index} "
                    f"(fold {self.fold.name}, seed {self.seed}), epoch {epoch}"
                )
        value = float(val[metric])
        if self.best_metric is None or (value > self.best_metric if mode == "max"
                                        else value < self.best_metric):
            self._new_best(epoch, value, val, mb)
        self.collapse_run = self.collapse_run + 1 if reason is not None else 0
        self.collapse_reason = reason
        losses = [r[TRAIN_LOSS] for r in self.history] + [train_loss]
        if (patience > 0 and self.collapse_run >= patience
                and (self.unchanged_run >= patience or not loss_improved(losses, patience))):
            self.collapsed = True
            self.stop(epoch)
        elif last:
            self.stop(epoch)
        row = {"member": self.index, "fold": self.fold.name, "seed": self.seed, "epoch": epoch,
               TRAIN_LOSS: train_loss, **{k: val[k] for k in VAL_KEYS},
               "lr": float(self.optimizer.param_groups[0]["lr"]),
               "seconds": time.perf_counter() - start, "collapsed": self.collapsed,
               "collapse_reason": reason, "active": self.active}
        self.history.append(row)
        return row

    def _stuck(self, epoch: int) -> str | None:
        """Why this epoch's validation predictions (self.last_pred) are stuck, or None; epochs
        inside the lr warmup are never judged (trainables/collapse.py)."""
        if epoch < first_judged_epoch(self.train_cfg) or self.last_pred is None:
            return None
        reference = self.collapse_reference
        if reference is None:  # the first judged epoch: nothing yet to be unchanged from
            self.collapse_reference = torch.as_tensor(self.last_pred.copy())
        reason = epoch_collapse(self.inputs.data.labels[self.val_idx].numpy(), self.last_pred,
                                self.n_classes,
                                reference=None if reference is None else reference.numpy(),
                                **collapse_rule(self.train_cfg))
        # several classes predicted, exactly as before: the decision boundaries have not moved
        # (one class is "unchanged" for any model still answering its bias: no evidence)
        same = (reason not in (SINGLE_CLASS, DEGENERATE) and reference is not None
                and predictions_unchanged(self.last_pred, reference.numpy()))
        self.unchanged_run = self.unchanged_run + 1 if same else 0
        return reason

    def _new_best(self, epoch: int, value: float, val: dict[str, Any], mb: MicroBatch) -> None:
        self.best_metric, self.best_epoch = value, epoch
        self.best_val = {k: val[k] for k in VAL_KEYS}
        self.best_state = {k: v.detach().to("cpu", copy=True)
                           for k, v in self.model.state_dict().items()}
        # test is evaluated only here, at a new best validation epoch: it never steers anything
        test = self.evaluate("test", mb, epoch)
        self.test = {k: test[split_metric("test", k)] for k in SCALAR_METRICS}
        self.test[CONFUSION] = test[split_metric("test", CONFUSION)]
        data = self.inputs.data
        if data.corpus_of:  # multi-corpus training: each corpus' own test UAR too
            self.test[UAR_BY_CORPUS] = uar_by_group(
                data.labels[self.test_idx].numpy(), self.last_pred,
                np.asarray(data.corpus_of)[self.test_idx.numpy()], self.n_classes)
        if self.distiller is not None:
            if self.teacher_test_pred is None:
                _, self.teacher_test_pred = self.predict(self.test_idx, mb, epoch,
                                                         self.distiller.teacher)
            self.test.update(agreement(self.teacher_test_pred, self.last_pred, self.n_classes))

    def stop(self, epoch: int) -> None:
        self.active = False
        self.stopped_epoch = epoch

    def results(self) -> dict[str, Any]:
        """The member's result at its best validation epoch (one row of MEMBER_RESULTS_JSON)."""
        out: dict[str, Any] = {"member": self.index, "fold": self.fold.name, "seed": self.seed,
                               "best_epoch": self.best_epoch}
        out.update({k: self.best_val.get(k, float("nan")) for k in VAL_KEYS})
        for k in SCALAR_METRICS:
            out[split_metric("test", k)] = self.test.get(k, float("nan"))
        out[split_metric("test", CONFUSION)] = self.test.get(CONFUSION)
        if UAR_BY_CORPUS in self.test:
            out[split_metric("test", UAR_BY_CORPUS)] = self.test[UAR_BY_CORPUS]
        if self.distiller is not None:
            out.update({k: self.test.get(k) for k in (AGREEMENT_ACC, AGREEMENT_CONFUSION)})
        out.update(n_test=int(self.test_idx.numel()), test_set_id=self.test_set_id,
                   collapsed=self.collapsed,
                   collapse_reason=self.collapse_reason if self.collapsed else None,
                   stopped_epoch=self.stopped_epoch)
        return out

    # -- checkpointing ------------------------------------------------------------------------
    _PLAIN = ("best_metric", "best_epoch", "best_val", "test", "history", "collapse_run",
              "collapse_reason", "collapse_reference", "unchanged_run", "collapsed", "active",
              "stopped_epoch", "samples_seen", "rng_state", "cuda_rng_state", "best_state")

    def state_dict(self) -> dict[str, Any]:
        state = {k: getattr(self, k) for k in self._PLAIN}
        state.update(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                     scheduler=self.scheduler.state_dict(), scaler=self.scaler.state_dict(),
                     generator=self.generator.get_state(), fold=self.fold.name, seed=self.seed)
        if self.distiller is not None:
            state["distill"] = self.distiller.state_dict()  # the projections (not the teacher)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["fold"], state["seed"]) != (self.fold.name, self.seed):
            raise TrainingError(
                f"checkpoint member {self.index} is fold {state['fold']} seed {state['seed']}, "
                f"expected fold {self.fold.name} seed {self.seed}"
            )
        self.model.load_state_dict(state["model"])
        if self.distiller is not None:
            self.distiller.load_state_dict(state["distill"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        own_cuda_rng = self.cuda_rng_state
        for k in self._PLAIN:
            # these are newer than some checkpoints: absent = none recorded
            newer = k in ("collapse_reason", "collapse_reference", "unchanged_run")
            setattr(self, k, state.get(k, 0 if k == "unchanged_run" else None) if newer
                    else state[k])
        if not self._cuda or self.cuda_rng_state is None:  # restored on another device type
            self.cuda_rng_state = own_cuda_rng
