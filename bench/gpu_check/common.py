"""What every part of the GPU check shares: how it runs (Run), a part's outcome (PartResult),
the family sizes (full and dry-run) and small unit helpers."""

from __future__ import annotations

import gc
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[2]
GIB, MIB = 2**30, 2**20
N_CLASSES = 4
GOAL_ERROR_PCT = 5.0
PARTS = ("1", "2", "3", "4", "cluster", "tests")
# Seconds each part may take in the full run on one H200 (7 minutes in all); printed beside the
# measured wall time so that a part that outgrows its share shows.
BUDGET_S = {"1": 90, "2": 45, "3": 45, "4": 150, "cluster": 10, "tests": 30}
GPU_MEMORY_FRACTION = 0.9  # the planner's default resources.gpu_memory_fraction
RAW_4S = 64_000  # 4 s at 16 kHz

# variant -> (model config, n_features, one sample's input shape): bench/memory.py's full sizes
FULL_FAMILIES: dict[str, tuple[dict[str, Any], int, tuple[int, ...]]] = {
    "cnn_lstm": ({"name": "cnn_lstm"}, 1, (RAW_4S,)),
    "sincnet per_frame": ({"name": "sincnet", "framing": "per_frame"}, 1, (16_000,)),
    "sincnet shared": ({"name": "sincnet", "framing": "shared"}, 1, (RAW_4S,)),
    "transformer": ({"name": "transformer"}, 64, (400, 64)),
    "resnet_lstm": ({"name": "resnet_lstm"}, 64, (400, 64)),
    "vggish_lstm": ({"name": "vggish_lstm"}, 64, (400, 64)),
    # 4 s of wav2vec2/HuBERT base hidden states: 200 frames x 13 layers x 768
    "ssl_head": ({"name": "ssl_head"}, 768, (200, 13, 768)),
}
# A tiny SincNet for the dry-run of parts 1-3 (0.25 s, 50 ms windows, 10 ms shift); naive in
# part 1 too, so that one estimate serves all three.
DRY_SINCNET = {"name": "sincnet", "sinc_filters": 8, "sinc_taps": 51, "conv_channels": [8, 8],
               "win": 800, "shift": 160, "seq_hidden": 16, "head_hidden": [16]}
DRY_FAMILIES: dict[str, tuple[dict[str, Any], int, tuple[int, ...]]] = {
    "cnn_lstm": ({"name": "cnn_lstm", "channels": [8, 16], "kernel_sizes": [16, 8],
                  "strides": [4, 4], "lstm_hidden": 16}, 1, (4000,)),
    "sincnet": ({**DRY_SINCNET, "framing": "naive"}, 1, (4000,)),
    "transformer": ({"name": "transformer", "d_model": 32, "heads": 2, "ff_dim": 64}, 16,
                    (50, 16)),
    "resnet_lstm": ({"name": "resnet_lstm", "channels": [4, 8], "lstm_hidden": 16}, 16, (50, 16)),
    "vggish_lstm": ({"name": "vggish_lstm", "width": 0.25, "lstm_hidden": 16}, 64, (96, 64)),
    "ssl_head": ({"name": "ssl_head", "proj_dim": 16, "head_hidden": [16]}, 16, (20, 3, 16)),
}


@dataclass(frozen=True)
class Run:
    """How this invocation runs: the device, and whether it is the tiny CPU dry-run."""

    device: torch.device
    dry_run: bool
    families: tuple[str, ...] | None = None  # part 1's variants (None: all of them)
    in_process: bool = False  # part 1: every measurement in this process (no fresh ones)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


@dataclass
class PartResult:
    """One part's outcome: its table, notes, hard checks (any False -> exit 1) and wall time."""

    part: str
    title: str
    goal: str = ""
    status: str = "ok"  # ok | failed (a check did not hold) | error (it raised) | not run
    table: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    checks: dict[str, bool] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        rows = [] if self.table is None else _json_rows(self.table)
        return {"part": self.part, "title": self.title, "goal": self.goal, "status": self.status,
                "seconds": round(self.seconds, 2), "budget_s": BUDGET_S.get(self.part),
                "checks": self.checks, "notes": self.notes, "rows": rows, "extra": self.extra}


def _json_rows(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows with NaN as null (JSON has no NaN) and numpy scalars as Python numbers."""
    out = []
    for row in table.to_dict("records"):
        clean = {}
        for key, value in row.items():
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            clean[str(key)] = value
        out.append(clean)
    return out


def _sync(run: Run) -> None:
    if run.cuda:
        torch.cuda.synchronize(run.device)


def _free(run: Run) -> None:
    """CUDA: drop what the last measurement left, so the next one starts from an empty cache.
    (Nothing on the CPU, where a gc pass over torch's heap costs about a second.)"""
    if run.cuda:
        gc.collect()
        torch.cuda.empty_cache()


def _mib(n: float | None) -> float:
    return float("nan") if n is None else round(n / MIB, 1)


def _gib(n: float | None) -> float:
    return float("nan") if n is None else round(n / GIB, 2)


def _pct(estimate: float, measured: float | None) -> float:
    """Error of the estimate in % of the measurement (NaN without one)."""
    if not measured:
        return float("nan")
    return round(100.0 * (estimate - measured) / measured, 2)


def _peaks(run: Run, alloc0: int, reserved0: int) -> tuple[int | None, int | None]:
    if not run.cuda:
        return None, None
    return (int(torch.cuda.max_memory_allocated(run.device) - alloc0),
            int(torch.cuda.max_memory_reserved(run.device) - reserved0))


def _start_peaks(run: Run) -> tuple[int, int]:
    if not run.cuda:
        return 0, 0
    _free(run)
    torch.cuda.synchronize(run.device)
    torch.cuda.reset_peak_memory_stats(run.device)
    return torch.cuda.memory_allocated(run.device), torch.cuda.memory_reserved(run.device)
