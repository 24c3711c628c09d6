"""The report's Optuna figures, drawn by optuna.visualization.matplotlib (the matplotlib backend
keeps the HTML offline: PNGs, no plotly.js) from the study report/study.py rebuilds: parameter
importance (fANOVA, seeded), one slice plot per parameter, parallel coordinates and contour (the
optimization history is plots.history: start order, integer ticks).

Each function returns a plots.Figure: the PNG, or a caveat saying why it was not drawn (no
complete trial, one varying parameter for a contour, ...). Importance and contour are not drawn
from fewer than MIN_TRIALS_FOR_IMPORTANCE / MIN_TRIALS_FOR_CONTOUR complete trials: a forest
fitted to a handful of points ranks noise, and a surface interpolated between a few points
draws the interpolation, not the objective; both look like evidence and are not.
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
from matplotlib.ticker import (  # noqa: E402
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
)

from orchestrator.report.plots import Figure, save  # noqa: E402
from orchestrator.report.study import SweepStudy  # noqa: E402

# Below this many complete trials fANOVA's importances say little (a random forest on a handful
# of points): the report does not draw them and says why. THE threshold.
MIN_TRIALS_FOR_IMPORTANCE = 10
# Below this many complete trials a contour is an interpolation between a few points.
MIN_TRIALS_FOR_CONTOUR = 10
SLICE_PARAMS = 12  # most important first: one readable figure each
CONTOUR_PARAMS = 2  # the two most important: one panel (k params draw a k x k grid, slow)
PARALLEL_PARAMS = 8


def importance_caveat(complete: int) -> str:
    """Why the importance plot is not drawn ('' when there are enough trials)."""
    if complete >= MIN_TRIALS_FOR_IMPORTANCE:
        return ""
    return (f"not drawn: {complete} complete trials; fANOVA fits a forest to the trials, and "
            f"below {MIN_TRIALS_FOR_IMPORTANCE} its ranking is mostly noise")


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


def importance(sweep: SweepStudy, found: dict[str, float] | None, target: str,
               path: Path) -> Figure:
    title = "Parameter importance (fANOVA)"
    if found is None:
        why = ("needs at least 2 complete trials" if len(sweep.complete) < 2
               else "no parameter varied over the complete trials")
        return Figure(title, None, f"not drawn: {why} (have {len(sweep.complete)})")
    if len(sweep.complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return Figure(title, None, importance_caveat(len(sweep.complete)))
    return _draw(title, path, lambda: ovm.plot_param_importances(
        sweep.study, evaluator=_Known(found), params=list(found), target_name=target),
        8, 0.45 * len(found) + 1.8)


def slices(sweep: SweepStudy, params: list[str], target: str, path: Path) -> Figure:
    """One slice plot per parameter (each its own PNG: `<path stem>_<param>.png`), most
    important first."""
    title = "Slice plots"
    if not sweep.complete or not params:
        return Figure(title, None, "not drawn: no parameter varied over the complete trials")
    panels = []
    for param in params[:SLICE_PARAMS]:
        one = path.with_name(f"{path.stem}_{param.replace('.', '_')}.png")
        integer = isinstance(sweep.distributions.get(param), optuna.distributions.IntDistribution)
        drawn = _draw(param, one, lambda p=param: ovm.plot_slice(
            sweep.study, params=[p], target_name=target), 6.0, 3.6,
            tidy=lambda axes, i=integer: _tidy_slices(axes, i))
        panels.append((param, drawn.png))
    caveat = ("one per parameter, most important first; x on the scale of the parameter's "
              "distribution in the sweep file (loguniform: log axis, int: integer ticks)")
    if len(params) > SLICE_PARAMS:
        caveat += f"; the first {SLICE_PARAMS} of {len(params)}"
    return Figure(title, None, caveat, more=tuple(panels))


def _tidy_slices(axes, integer: bool = False) -> None:
    """Categorical and long tick labels overlap in narrow panels: rotate them; an int
    parameter gets integer ticks (Optuna's are 1.25, 1.5, ...)."""
    for ax in np.atleast_1d(axes).flat:
        if integer:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
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
    if len(sweep.complete) < MIN_TRIALS_FOR_CONTOUR:
        return Figure(title, None, f"not drawn: {len(sweep.complete)} complete trials; a "
                                   f"surface interpolated between fewer than "
                                   f"{MIN_TRIALS_FOR_CONTOUR} points shows the interpolation, "
                                   "not the objective")
    shown = params[:CONTOUR_PARAMS]
    side = 5.5 if len(shown) == 2 else 3.4 * len(shown)
    integer = [isinstance(sweep.distributions.get(p), optuna.distributions.IntDistribution)
               for p in shown]

    def tidy(axes) -> None:  # Optuna's contour: x = shown[0], y = shown[1]
        ax = np.atleast_1d(axes).flat[0]
        for axis, is_int in zip((ax.xaxis, ax.yaxis), integer, strict=False):
            if is_int:
                axis.set_major_locator(MaxNLocator(integer=True))

    return _draw(title, path, lambda: ovm.plot_contour(sweep.study, params=shown,
                                                       target_name=target),
                 side + 1.5, side, tidy=tidy)
