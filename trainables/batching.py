"""Epoch order, class weights, input gathering and the shrinking micro-batch of a trial."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from trainables.errors import TrainingError
from trainables.models.sample_noise import ghost_groups

if TYPE_CHECKING:  # annotations only: the data layer imports soundfile, which a bare GPU
    from trainables.data.base import PreparedData  # machine running bench/gpu_check/ lacks


@dataclass
class MicroBatch:
    """The micro-batch size shared by every member of a trial (the planner's or the logical batch),
    halved on each out-of-memory error; every halving is recorded in `events`."""

    size: int
    oom_retries: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)

    def halve(self, exc: BaseException, *, member: int, epoch: int, phase: str) -> None:
        """Halve the size after an OOM in `phase`; at size 1 raise TrainingError (from `exc`)."""
        if self.size <= 1:
            raise TrainingError(
                f"out of memory at micro-batch 1 (member {member}, epoch {epoch}, {phase}): "
                f"even one sample does not fit on this device; {exc}"
            ) from exc
        new = self.size // 2
        self.events.append(
            {"member": member, "epoch": epoch, "phase": phase, "from": self.size, "to": new}
        )
        self.size = new
        self.oom_retries += 1

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "oom_retries": self.oom_retries, "events": list(self.events)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size = int(state["size"])
        self.oom_retries = int(state["oom_retries"])
        self.events = list(state["events"])


def class_counts(labels: torch.Tensor, idx: torch.Tensor, n_classes: int) -> torch.Tensor:
    return torch.bincount(labels[idx], minlength=n_classes).double()


def class_weights(labels: torch.Tensor, idx: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Balanced weights n / (C_present * count_c) over the split `idx`; 0 for absent classes."""
    counts = class_counts(labels, idx, n_classes)
    present = counts > 0
    weights = torch.zeros(n_classes, dtype=torch.float64)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.float()


def epoch_batches(
    train_idx: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    sample_weights: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """The logical batches of one epoch (index tensors into the data), drawn with `generator`.

    Without `sample_weights`: a permutation of `train_idx`. With them (class-balanced sampling):
    len(train_idx) draws with replacement, probability proportional to the weights. A trailing
    batch of a single sample is merged into the previous batch, so that batch-norm models never
    see a training batch of one.
    """
    n = int(train_idx.numel())
    if sample_weights is None:
        order = torch.randperm(n, generator=generator)
    else:
        order = torch.multinomial(sample_weights, n, replacement=True, generator=generator)
    batches = list(train_idx[order].split(batch_size))
    if len(batches) > 1 and batches[-1].numel() == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """The number of batches `epoch_batches` yields for `n_train` samples."""
    steps = math.ceil(n_train / batch_size)
    return steps - 1 if steps > 1 and n_train % batch_size == 1 else steps


def micro_chunks(idx: torch.Tensor, micro_batch: int,
                 norm_batch: int = 1) -> tuple[torch.Tensor, ...]:
    """Split a logical batch into micro-batches of at most `micro_batch`.

    `norm_batch` > 1 and micro_batch >= norm_batch: cut only on ghost-batch boundaries
    (`ghost_groups`), as many whole ghost batches per chunk as fit, so that
    BatchNorm statistics do not depend on the micro-batch (a merged trailing ghost batch of
    norm_batch + 1 may exceed micro_batch by one sample). Otherwise ceil(n / micro_batch)
    near-equal chunks."""
    n = idx.numel()
    if norm_batch <= 1 or micro_batch < norm_batch or n <= micro_batch:
        return idx.tensor_split(math.ceil(n / micro_batch))
    sizes: list[int] = []
    for group in ghost_groups(n, norm_batch):
        if sizes and sizes[-1] + group <= micro_batch:
            sizes[-1] += group
        else:
            sizes.append(group)
    return idx.split(sizes)


class Inputs:
    """Gathers (x, lengths, y) of an index tensor onto the device, applying per-fold
    normalisation (mean/std of the fold's training split) when the data asks for it."""

    def __init__(
        self, data: PreparedData, device: torch.device, stats: tuple[Any, Any] | None
    ) -> None:
        self.data = data
        self.device = device
        self.mean = self.std = None
        if stats is not None:
            self.mean = torch.as_tensor(stats[0], dtype=torch.float32, device=device)
            self.std = torch.as_tensor(stats[1], dtype=torch.float32, device=device)

    def __call__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        data = self.data
        x = data.features[idx].to(self.device, non_blocking=True).float()
        lengths = data.lengths[idx].to(self.device, non_blocking=True)
        y = data.labels[idx].to(self.device, non_blocking=True)
        if self.mean is not None:
            x = (x - self.mean) / self.std
            # keep the padding at zero so that it looks like before normalisation
            steps = torch.arange(x.shape[1], device=self.device)
            mask = steps[None, :] < lengths[:, None]
            x = x * (mask if x.dim() == 2 else mask[..., None])
        return x, lengths, y


def fold_stats(data: PreparedData, train_idx: Any) -> tuple[Any, Any] | None:
    """(mean, std) of the fold's training split when data.normalize == "train", else None."""
    if data.normalize != "train":
        return None
    from trainables.data.features import train_stats  # the data layer's rule, shared with prepare

    return train_stats(data.features, data.lengths, train_idx)
