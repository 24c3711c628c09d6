"""The report's own figures (matplotlib, Agg backend, no network): learning curves and confusion
matrices; the Optuna figures are optuna_plots.py. Each function writes one PNG."""

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


@dataclass(frozen=True)
class Figure:
    """One figure section of the report: its title, the PNG (None when it was not drawn), a
    caveat line shown below it (why it was not drawn, or how far to trust it) and extra HTML."""

    title: str
    png: Path | None
    caveat: str = ""
    extra_html: str = ""  # shown below the caveat (already escaped HTML)


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
