"""The report's Optuna figures, drawn by optuna.visualization.matplotlib (the matplotlib backend
keeps the HTML offline: PNGs, no plotly.js) from the study report/study.py rebuilds: optimization
history, parameter importance (fANOVA, seeded), slice, parallel coordinates and contour.

Each function returns a plots.Figure: the PNG, or a caveat saying why it was not drawn (no
complete trial, one varying parameter for a contour, ...). Importances from fewer than
MIN_TRIALS_FOR_IMPORTANCE complete trials carry a caveat line.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before Optuna's matplotlib backend imports pyplot: no display needed
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import optuna.visualization.matplotlib as ovm  # noqa: E402
from matplotlib.figure import Figure as MplFigure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from orchestrator.report.plots import Figure, save  # noqa: E402
from orchestrator.report.study import SweepStudy  # noqa: E402

# Below this many complete trials fANOVA's importances say little (a random forest on a handful
# of points): the report shows them with a caveat line. THE threshold.
MIN_TRIALS_FOR_IMPORTANCE = 10
SLICE_PARAMS = 6  # most important first; more panels get too narrow to read
SLICE_PANEL_WIDTH = 3.8  # inches
CONTOUR_PARAMS = 2  # the two most important: one panel (k params draw a k x k grid, slow)
PARALLEL_PARAMS = 8


def importance_caveat(complete: int) -> str:
    """The caveat line below the importance plot ('' when there are enough trials)."""
    if complete >= MIN_TRIALS_FOR_IMPORTANCE:
        return ""
    return (f"importances from {complete} trials: indicative only (fewer than "
            f"{MIN_TRIALS_FOR_IMPORTANCE} complete trials)")


def evaluator() -> optuna.importance.BaseImportanceEvaluator:
    """fANOVA, Optuna's default evaluator, seeded so a report is reproducible."""
    return optuna.importance.FanovaImportanceEvaluator(seed=0)


class _Known(optuna.importance.BaseImportanceEvaluator):
    """Hands plot_param_importances the importances `importances()` already computed (fANOVA
    fits a forest: seconds per call on a loaded machine, and the numbers stay identical)."""

    def __init__(self, found: dict[str, float]) -> None:
        self.found = found

    def evaluate(self, study, params=None, *, target=None) -> dict[str, float]:
        return {k: v for k, v in self.found.items() if params is None or k in params}


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """The matplotlib backend is 'experimental' and logs that its figures differ from plotly's:
    noise for a report's reader, not a problem of the sweep."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def _figure_of(axes) -> MplFigure:
    first = axes.flat[0] if isinstance(axes, np.ndarray) else axes
    return first.figure


def _compact_power(value: float, _pos: int) -> str:
    """1e-4, 3e-4, 0.01 ... : short labels that fit narrow panels (matplotlib's 3x10^-4 do not)."""
    if value <= 0:
        return ""
    text = f"{value:.0e}"
    mantissa, exponent = text.split("e")
    exponent = str(int(exponent))
    return f"{mantissa}e{exponent}" if not -3 < int(exponent) < 3 else f"{value:g}"


def _readable_log_ticks(fig: MplFigure) -> None:
    """Log axes: majors at 1, 2, 5 x 10^k with short labels, no minor labels (matplotlib's
    default labels the minors too when a range spans under a decade or two: they overlap)."""
    for ax in fig.axes:
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale != "log":
                continue
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FuncFormatter(_compact_power))
            axis.set_minor_formatter(NullFormatter())


def _draw(title: str, path: Path, plot: Callable[[], object], width: float, height: float,
          tidy: Callable[[object], None] | None = None, caveat: str = "") -> Figure:
    """Draw one Optuna figure at `width` x `height` inches (set before Optuna lays it out and adds
    its colorbar: resizing afterwards overlaps them). rc_context also undoes Optuna's global
    plt.style.use("ggplot"), which would restyle the report's own figures."""
    # constrained layout places Optuna's colorbars and outside legends in one draw (savefig's
    # bbox_inches="tight" would draw every figure twice: most of a report's time)
    layout = {"figure.figsize": (width, height), "figure.constrained_layout.use": True}
    with _quiet_optuna(), matplotlib.rc_context(layout):
        axes = plot()
        if tidy is not None:
            tidy(axes)
        fig = _figure_of(axes)
        _readable_log_ticks(fig)
        png = save(fig, path, tight=False)
    return Figure(title, png, caveat)


def importances(sweep: SweepStudy) -> dict[str, float] | None:
    """{param: importance} (sum 1) over the varying params, or None when there is nothing to
    evaluate (fewer than 2 complete trials or no varying param)."""
    varying = sweep.varying_params()
    if len(sweep.complete) < 2 or not varying:
        return None
    with _quiet_optuna():
        return dict(optuna.importance.get_param_importances(
            sweep.study, evaluator=evaluator(), params=varying))


def history(sweep: SweepStudy, target: str, path: Path) -> Figure:
    title = "Optimization history"
    if not sweep.complete:
        return Figure(title, None, "no complete trial: nothing to draw")
    return _draw(title, path, lambda: ovm.plot_optimization_history(
        sweep.study, target_name=target), 8, 4.2,
        caveat="complete and collapsed trials (what Optuna was told COMPLETE); "
               "pruned and failed trials are in the tables")


def importance(sweep: SweepStudy, found: dict[str, float] | None, target: str,
               path: Path) -> Figure:
    title = "Parameter importance (fANOVA)"
    if found is None:
        why = ("needs at least 2 complete trials" if len(sweep.complete) < 2
               else "no parameter varied over the complete trials")
        return Figure(title, None, f"not drawn: {why} (have {len(sweep.complete)})")
    return _draw(title, path, lambda: ovm.plot_param_importances(
        sweep.study, evaluator=_Known(found), params=list(found), target_name=target),
        8, 0.45 * len(found) + 1.8, caveat=importance_caveat(len(sweep.complete)))


def slices(sweep: SweepStudy, params: list[str], target: str, path: Path) -> Figure:
    title = "Slice plots"
    if not sweep.complete or not params:
        return Figure(title, None, "not drawn: no parameter varied over the complete trials")
    shown = params[:SLICE_PARAMS]
    # Optuna makes each panel half of figure.figsize's width wide (one panel: all of it)
    width = 6.0 if len(shown) == 1 else 2 * SLICE_PANEL_WIDTH
    return _draw(title, path, lambda: ovm.plot_slice(sweep.study, params=shown,
                                                     target_name=target),
                 width, 4.0, tidy=_tidy_slices,
                 caveat="x axes on the scale of each parameter's distribution in the sweep "
                        "file (loguniform: log axis)")


def _tidy_slices(axes) -> None:
    """Categorical and long tick labels overlap in narrow panels: rotate them."""
    for ax in np.atleast_1d(axes).flat:
        if ax.get_xscale() != "log":
            for label in ax.get_xticklabels():
                label.set_rotation(30)
                label.set_horizontalalignment("right")


def parallel(sweep: SweepStudy, params: list[str], target: str, path: Path) -> Figure:
    title = "Parallel coordinates"
    if not sweep.complete or not params:
        return Figure(title, None, "not drawn: no parameter varied over the complete trials")
    shown = params[:PARALLEL_PARAMS]
    return _draw(title, path, lambda: ovm.plot_parallel_coordinate(
        sweep.study, params=shown, target_name=target), max(7.0, 1.8 * (len(shown) + 1)), 4.5)


def contour(sweep: SweepStudy, params: list[str], target: str, path: Path) -> Figure:
    title = "Contour"
    if len(params) < 2:
        return Figure(title, None, f"not drawn: a contour needs two varying parameters "
                                   f"(this sweep has {len(params)})")
    if len(sweep.complete) < 2:
        return Figure(title, None, "not drawn: needs at least 2 complete trials")
    shown = params[:CONTOUR_PARAMS]
    side = 5.5 if len(shown) == 2 else 3.4 * len(shown)
    return _draw(title, path, lambda: ovm.plot_contour(sweep.study, params=shown,
                                                       target_name=target),
                 side + 1.5, side)
