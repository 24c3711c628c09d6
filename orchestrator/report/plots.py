"""The report's own figures (matplotlib, Agg backend, no network): the optimization history in
start order, the timeline of trials, learning curves (of trials, of one trial's members) and
confusion matrices; the other Optuna figures are optuna_plots.py. Each function writes one PNG."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

CONFUSION_COLUMNS = 4
# one colour per status, the same in every figure (and close to the HTML's status badges)
STATUS_COLORS = {"completed": "#2e7d32", "pruned": "#e67e22", "collapsed": "#c0392b",
                 "failed": "#777777", "does_not_fit": "#555555"}


@dataclass(frozen=True)
class Figure:
    """One figure section of the report: its title, the PNG (None when it was not drawn), a
    caveat line shown below it (why it was not drawn, or how far to trust it) and extra HTML."""

    title: str
    png: Path | None
    caveat: str = ""
    extra_html: str = ""  # shown below the caveat (already escaped HTML)
    more: tuple[tuple[str, Path], ...] = ()  # further (caption, PNG) panels after the first


def save(fig, path: Path, tight: bool = True) -> Path:
    """Write `fig` as a PNG and close it. `tight=False` for a figure that lays itself out
    (constrained layout: Optuna's, whose colorbars tight_layout cannot place)."""
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def curves(frame: pd.DataFrame, metric: str, labels: dict[str, str], path: Path) -> Path:
    """Mean over members (line) and +- one std (band) per epoch, for each trial; the metric and
    the validation loss side by side."""
    panels = [m for m in (metric, "val_loss") if f"{m}_mean" in frame.columns]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, column in zip(axes[0], panels):
        for trial_id in labels:  # rank order, so the legend reads #1, #2, ...
            group = frame[frame["trial_id"] == trial_id]
            if not len(group):
                continue
            mean, std = group[f"{column}_mean"], group[f"{column}_std"].fillna(0)
            line = ax.plot(group["epoch"], mean, marker="o", ms=3, label=labels[trial_id])[0]
            ax.fill_between(group["epoch"], mean - std, mean + std, alpha=0.2,
                            color=line.get_color())
        ax.set(xlabel="epoch", ylabel=column, title=f"{column}: mean ± std over members")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    return save(fig, path)


def confusion(matrices: dict[str, pd.DataFrame], title: str, path: Path) -> Path:
    """Confusion matrices side by side (rows: true class, columns: predicted, both named by the
    frame's index / columns: query.confusion), each titled with its UAR (mean recall)."""
    names_ = next(iter(matrices.values())).index if matrices else []
    longest = max((len(str(n)) for n in names_), default=1)
    # at most 4 panels a row, each sized by its class count and the longest class name, so the
    # page shows them near 1:1 (wider PNGs are scaled down and their numbers get unreadable)
    side = max(2.9, 0.4 * len(names_) + 0.07 * longest + 0.9)
    ncols = max(1, min(len(matrices), CONFUSION_COLUMNS))
    nrows = max(1, -(-len(matrices) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(side * ncols, (side + 0.5) * nrows),
                             squeeze=False)
    for ax in axes.flat[len(matrices):]:
        ax.set_axis_off()
    for ax, (name, frame) in zip(axes.flat, matrices.items()):
        mat = frame.to_numpy()
        ax.imshow(mat, cmap="Blues")
        for (i, j), value in np.ndenumerate(mat):
            ax.text(j, i, str(int(value)), ha="center", va="center", fontsize=8,
                    color="white" if value > mat.max() / 2 else "black")
        recall = np.diag(mat) / np.maximum(mat.sum(axis=1), 1)
        ax.set_title(f"{name}\nUAR {recall.mean():.3f}", fontsize=9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_xticks(range(mat.shape[1]), [str(c) for c in frame.columns], rotation=45,
                      ha="right", fontsize=8)
        ax.set_yticks(range(mat.shape[0]), [str(c) for c in frame.index], fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save(fig, path)


def _status_color(status: str) -> str:
    return STATUS_COLORS.get(status, "#34609b")


def history(trials: pd.DataFrame, mode: str, target: str, path: Path) -> Path:
    """Each trial's objective against its start order (1 = the sweep's first trial; integer
    ticks), coloured by status, and the best so far (ranked statuses only) as a step line.
    `trials`: order, status, objective (html.start_order)."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    scored = trials[trials["objective"].notna()]
    for status, group in scored.groupby("status", sort=False):
        ax.scatter(group["order"], group["objective"], s=22, color=_status_color(status),
                   label=status, zorder=3)
    ranked = scored[scored["status"].isin(("completed", "pruned"))].sort_values("order")
    if len(ranked):
        best = ranked["objective"].cummax() if mode == "max" else ranked["objective"].cummin()
        ax.step(ranked["order"], best, where="post", color="#222", lw=1.2, label="best so far")
    ax.set(xlabel="trial, in start order", ylabel=target, title="Optimization history")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0.5, max(1, int(trials["order"].max())) + 0.5)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # never over a point
    return save(fig, path)


def timeline(trials: pd.DataFrame, path: Path) -> Path:
    """One bar per trial from its start to its end (minutes since the sweep's first start),
    coloured by status, labelled with its GPU share. `trials`: order, trial_id, status,
    started_at, ended_at, gpu_fraction (html.start_order; rows with both times only)."""
    t0 = trials["started_at"].min()
    start = (trials["started_at"] - t0).dt.total_seconds() / 60
    length = ((trials["ended_at"] - trials["started_at"]).dt.total_seconds() / 60).clip(lower=0)
    height = max(2.5, 0.28 * len(trials) + 1.2)
    fig, ax = plt.subplots(figsize=(9, height))
    colors = [_status_color(s) for s in trials["status"]]
    ax.barh(trials["order"], length, left=start, color=colors, height=0.7)
    end = float((start + length).max()) or 1.0
    for order, left, width, share in zip(trials["order"], start, length,
                                         trials["gpu_fraction"].fillna(0.0), strict=True):
        if share:
            ax.text(left + width + end * 0.005, order, f"{share:g} GPU", va="center", fontsize=7)
    ax.set_yticks(list(trials["order"]), [f"{o} {t}" for o, t in
                                          zip(trials["order"], trials["trial_id"], strict=True)],
                  fontsize=7)
    ax.invert_yaxis()  # the first trial on top
    ax.set_xlim(0, end * 1.08)
    ax.set(xlabel="minutes since the first trial started", title="Timeline of trials")
    handles = [plt.Rectangle((0, 0), 1, 1, color=_status_color(s))
               for s in dict.fromkeys(trials["status"])]
    ax.legend(handles, list(dict.fromkeys(trials["status"])), fontsize=7, loc="upper left",
              bbox_to_anchor=(1.01, 1.0))  # outside: never over a bar
    return save(fig, path)


def member_curves(frame: pd.DataFrame, metric: str, title: str, path: Path) -> Path:
    """One trial's members: `metric` and the validation loss per epoch, one line per member
    (`frame`: the trial's rows of the epochs table)."""
    panels = [m for m in (metric, "val_loss") if m in frame.columns and frame[m].notna().any()]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.5 * max(1, len(panels)), 3.4),
                             squeeze=False)
    for ax, column in zip(axes[0], panels, strict=False):
        for (member, fold, seed), group in frame.groupby(["member", "fold", "seed"]):
            group = group.sort_values("epoch")
            ax.plot(group["epoch"], group[column], marker="o", ms=3,
                    label=f"member {member}: fold {fold}, seed {seed}")
        ax.set(xlabel="epoch", ylabel=column, title=f"{title}: {column}")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=6)
    return save(fig, path)
