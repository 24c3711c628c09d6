"""Evaluation of one member (mixed into trainables.members.Member): predictions of its model (or
of its teacher) in eval mode with OOM halving, and the metrics of a split."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainables.batching import MicroBatch
from trainables.memory.oom import retry_on_oom
from trainables.metrics import compute_metrics
from trainables.names import LOSS, split_metric


class MemberEvaluation:
    """Needs the Member attributes model, inputs, device, index, n_classes, val_idx, test_idx and
    its _autocast()."""

    @torch.no_grad()
    def _predict_once(self, idx: torch.Tensor, size: int,
                      model: nn.Module) -> tuple[float, np.ndarray]:
        loss_sum = torch.zeros((), device=self.device)
        preds = []
        for chunk in idx.split(size):
            x, lengths, y = self.inputs(chunk)
            with self._autocast():
                logits = model(x, lengths)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            preds.append(logits.argmax(dim=1))
        # sync point: one device -> host copy per split, after every batch has been queued
        pred = torch.cat(preds).cpu().numpy() if preds else np.zeros(0, dtype=np.int64)
        return float(loss_sum) / max(1, idx.numel()), pred

    def predict(self, idx: torch.Tensor, mb: MicroBatch, epoch: int,
                model: nn.Module | None = None) -> tuple[float, np.ndarray]:
        """Mean unweighted CE and argmax predictions over `idx` in eval mode (OOM: halve, redo),
        of the member's model or of `model` (the teacher)."""
        self.model.eval()
        try:
            return retry_on_oom(lambda size: self._predict_once(idx, size, model or self.model),
                                mb, member=self.index, epoch=epoch, phase="eval")
        finally:
            self.model.train()

    def evaluate(self, split: str, mb: MicroBatch, epoch: int) -> dict[str, Any]:
        idx = {"val": self.val_idx, "test": self.test_idx}[split]
        loss, pred = self.predict(idx, mb, epoch)
        labels = self.inputs.data.labels[idx].numpy()
        metrics = compute_metrics(labels, pred, self.n_classes)
        out = {split_metric(split, k): v for k, v in metrics.items()}
        out[split_metric(split, LOSS)] = loss
        out["n_predicted_classes"] = int(np.unique(pred).size)
        self.last_pred = pred  # _new_best compares the test predictions with the teacher's
        return out

