"""The report's figures (matplotlib, Agg backend, no network). Each function writes one PNG."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from orchestrator.store import schema  # noqa: E402
from trainables import names  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def history(trials: pd.DataFrame, mode: str, path: Path) -> Path:
    """Objective of each trial in the order they ended, and the best so far."""
    order = trials.sort_values(["ended_at", "trial_id"]).reset_index(drop=True)
    objective = order[names.OBJECTIVE].astype(float)
    final = objective.where(order[schema.STATUS].isin(schema.SCORED_STATUSES))  # not pruned
    best = final.cummax() if mode == "max" else final.cummin()
    fig, ax = plt.subplots(figsize=(7, 4))
    colors = {schema.COMPLETED: "tab:blue", schema.PRUNED: "tab:orange",
              schema.COLLAPSED: "tab:red"}
    for status, group in order.groupby(schema.STATUS):
        ax.scatter(group.index + 1, group[names.OBJECTIVE], s=22, label=status,
                   color=colors.get(status, "tab:gray"))
    ax.step(np.arange(1, len(order) + 1), best.ffill(), where="post", color="black",
            label="best so far")
    ax.set(xlabel="trial (in order of completion)", ylabel="objective",
           title="Optimization history (best so far: completed trials)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    return _save(fig, path)


def importance(importances: dict[str, float], path: Path) -> Path:
    """Horizontal bars: Optuna's parameter importance (sums to 1)."""
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(items) + 1.5))
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    for i, (_, value) in enumerate(items):
        ax.text(value, i, f" {value:.2f}", va="center", fontsize=8)
    ax.set(xlabel="importance for the objective", title="Parameter importance (Optuna)")
    return _save(fig, path)


def slices(trials: pd.DataFrame, params: list[str], log_params: set[str], path: Path) -> Path:
    """Objective against the value of each of `params` (one panel each)."""
    fig, axes = plt.subplots(1, len(params), figsize=(3.6 * len(params), 3.4), squeeze=False)
    rng = np.random.default_rng(0)
    scored = trials.dropna(subset=[names.OBJECTIVE])
    for ax, param in zip(axes[0], params):
        values = scored[param]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            ax.scatter(values, scored[names.OBJECTIVE], s=18, alpha=0.8)
            if pd.api.types.is_integer_dtype(values):
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if param in log_params:
                ax.set_xscale("log")
        else:
            cats = sorted(values.astype(str).unique())
            x = values.astype(str).map({c: i for i, c in enumerate(cats)}).to_numpy(float)
            ax.scatter(x + rng.uniform(-0.12, 0.12, len(x)), scored[names.OBJECTIVE], s=18)
            ax.set_xticks(range(len(cats)), cats, rotation=30, fontsize=8)
        ax.set(xlabel=param.removeprefix("param."), ylabel="objective")
    fig.suptitle("Slice plots: objective per parameter value")
    return _save(fig, path)


def curves(frame: pd.DataFrame, metric: str, labels: dict[str, str], path: Path) -> Path:
    """Mean over members (line) and +- one std (band) per epoch, for each trial; the metric and
    the validation loss side by side."""
    panels = [m for m in (metric, "val_loss") if f"{m}_mean" in frame.columns]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, column in zip(axes[0], panels):
        for trial_id, group in frame.groupby("trial_id", sort=False):
            mean, std = group[f"{column}_mean"], group[f"{column}_std"].fillna(0)
            line = ax.plot(group["epoch"], mean, marker="o", ms=3, label=labels[trial_id])[0]
            ax.fill_between(group["epoch"], mean - std, mean + std, alpha=0.2,
                            color=line.get_color())
        ax.set(xlabel="epoch", ylabel=column, title=f"{column}: mean ± std over members")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    return _save(fig, path)


def confusion(members: pd.DataFrame, title: str, path: Path) -> Path:
    """Test confusion matrices (rows: true class) per fold (summed over seeds) and in total."""
    mats: dict[str, np.ndarray] = {}
    for fold, group in members.sort_values("fold").groupby("fold", sort=True):
        arrays = [np.array(json.loads(c)) for c in group["test_confusion"].dropna()]
        if arrays:
            mats[f"fold {fold}"] = np.sum(arrays, axis=0)
    if mats:
        mats["all folds"] = np.sum(list(mats.values()), axis=0)
    fig, axes = plt.subplots(1, max(1, len(mats)), figsize=(3.2 * max(1, len(mats)), 4.0),
                             squeeze=False)
    for ax, (name, mat) in zip(axes[0], mats.items()):
        ax.imshow(mat, cmap="Blues")
        for (i, j), value in np.ndenumerate(mat):
            ax.text(j, i, str(int(value)), ha="center", va="center", fontsize=8,
                    color="white" if value > mat.max() / 2 else "black")
        recall = np.diag(mat) / np.maximum(mat.sum(axis=1), 1)
        ax.set(title=f"{name}\nUAR {recall.mean():.3f}", xlabel="predicted", ylabel="true",
               xticks=range(mat.shape[1]), yticks=range(mat.shape[0]))
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
