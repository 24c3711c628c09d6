"""The leaderboard as an HTML <table> (sortable by a click on a header, a few lines of inline JS).

Rendered generically from the columns query.leaderboard returns, so a column added there appears
here without a change: a `x_mean` (or `x`) with its `x_std` becomes one `mean ± std` cell; a
paired group (`x`, `x_low`, `x_high`, `x_n`, `x_p`, `x_t_p`, `x_p_holm`, `x_verdict`, `x_note`:
query/paired.py) becomes one cell with the difference, its 95 % interval, n (test sets), the
p-values and the verdict (better / worse / no evidence / too few test sets); `param.*` columns
show their dotted key; a transductive trial's id carries a mark. Collapsed trials and the
baseline's reference row are marked by a row class; the leaderboard's footer (what ±, n and the
verdicts mean, the winner's curse) is printed under the table. Every cell carries its raw value
in `data-v`, which the sort reads.
"""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from orchestrator.query import display_name, param_columns
from orchestrator.query.frames import BEST, N_TEST_SETS, TRANSDUCTIVE, TRANSDUCTIVE_MARK
from orchestrator.store import schema
from trainables import names

HIDDEN = (schema.TEST_CONFUSION, schema.SWEEP)  # JSON-shaped cells; one sweep per report
PAIRED_PARTS = ("low", "high", "n", "p", "t_p", "p_holm", "verdict", "note")
PAIRED_LABELS = {"vs_best": "vs #1", "vs_baseline": "vs baseline",  # on test (the footer)
                 "val_vs_best": "vs #1 (validation: selection metric)",
                 "val_vs_baseline": "vs baseline (validation: selection metric)",
                 # search.confirm: on the finalists' fresh-seed runs only (the final verdict)
                 "confirmed_vs_best": "final vs #1 (confirmation runs)",
                 "confirmed_vs_baseline": "final vs baseline (confirmation runs)"}
FIRST = ("rank", schema.TRIAL_ID, schema.STATUS, names.OBJECTIVE, "vs_best", "vs_baseline",
         "confirmed", "optimism", "confirmed_vs_best")
_DOCS = {name: doc for name, _, doc in schema.TRIAL_FIELDS}


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists, dicts: present
        return False


def _number(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()
                                  and abs(value) >= 1):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.{digits}g}"  # significant digits: a learning rate of 0.00152 stays
    return str(value)


def _sort_value(value: Any) -> str:
    if _missing(value):
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(float(value))
    return str(value)


def _cell(text: str, value: Any, cls: str = "", title: str = "") -> str:
    attrs = f' data-v="{html.escape(_sort_value(value))}"'
    attrs += f' class="{cls}"' if cls else ""
    attrs += f' title="{html.escape(title)}"' if title else ""
    return f"<td{attrs}>{text}</td>"


class _Column:
    """One shown column: its header and how to render a row's cell."""

    def __init__(self, key: str, header: str, kind: str, parts: dict[str, str]) -> None:
        self.key, self.header, self.kind, self.parts = key, header, kind, parts

    def render(self, row: dict[str, Any], best_id: str | None) -> str:
        value = row.get(self.key)
        if self.kind == "paired":
            return self._paired(row, value, best_id)
        if self.kind == "spread":
            return self._spread(row, value)
        if _missing(value):
            return _cell("–", None, "na")
        if self.key == schema.TRIAL_ID and row.get(TRANSDUCTIVE) is True:
            return _cell(f"{html.escape(str(value))}{TRANSDUCTIVE_MARK}", value, "",
                         "transductive: data.normalize=speaker")
        if self.key == schema.STATUS:
            return _cell(f'<span class="status {html.escape(str(value))}">'
                         f"{html.escape(str(value))}</span>", value)
        if self.key == schema.MEMBERS_COLLAPSED and value:
            return _cell(f'<span class="warn">{_number(value)}</span>', value)
        cls = "num" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
        return _cell(html.escape(_number(value)), value, cls)

    def _spread(self, row: dict[str, Any], mean: Any) -> str:
        if _missing(mean):
            return _cell("–", None, "na")
        std = row.get(self.parts["std"])
        text = f"{mean:.3f}" if _missing(std) else f"{mean:.3f}<br><small>± {std:.3f}</small>"
        count = row.get(N_TEST_SETS)  # the unit of ±: test sets (members in older frames)
        count = row.get(schema.MEMBERS) if _missing(count) else count
        if self.key == names.OBJECTIVE and not _missing(count):
            text += f" <small>(n={int(count)})</small>"
        return _cell(text, mean, "num")

    def _paired(self, row: dict[str, Any], mean: Any, best_id: str | None) -> str:
        part = {p: row.get(self.parts[p]) if p in self.parts else None for p in PAIRED_PARTS}
        if self.key.endswith("vs_best") and (row.get(schema.TRIAL_ID) == best_id
                                             or part["verdict"] == BEST):
            return _cell("<b>#1</b> <small>(the reference)</small>", 0.0, "paired")
        if self.key.endswith("vs_baseline") and row.get(schema.STATUS) == schema.REFERENCE:
            return _cell("<small>(the reference)</small>", 0.0, "paired")
        if _missing(mean):
            return _cell("–", None, "na", str(part["note"] or ""))
        lines = [f"<b>{mean:+.3f}</b>"]
        if not _missing(part["low"]) and not _missing(part["high"]):
            lines.append(f"<small>[{part['low']:+.3f}, {part['high']:+.3f}]</small>")
        facts = []
        if not _missing(part["n"]):
            facts.append(f"n={int(part['n'])}")
        if not _missing(part["t_p"]):
            facts.append(f"t p={part['t_p']:.2g}")
        if not _missing(part["p_holm"]):
            facts.append(f"Holm p={part['p_holm']:.2g}")
        if not _missing(part["p"]):
            facts.append(f"Wilcoxon p={part['p']:.2g}")
        if facts:
            lines.append(f"<small>{' · '.join(facts)}</small>")
        if not _missing(part["verdict"]):
            verdict = str(part["verdict"])
            lines.append(f'<span class="verdict {verdict.replace(" ", "-")}">'
                         f"{html.escape(verdict)}</span>")
        return _cell("<br>".join(lines), mean, "paired", str(part["note"] or ""))


def _columns(frame: pd.DataFrame) -> list[_Column]:
    columns = [str(c) for c in frame.columns]
    taken: set[str] = set(c for c in columns if c in HIDDEN)
    out: list[_Column] = []
    for column in columns:
        if column in taken:
            continue
        if f"{column}_low" in columns:  # a fold-paired group
            parts = {p: f"{column}_{p}" for p in PAIRED_PARTS if f"{column}_{p}" in columns}
            taken.update(parts.values())
            header = PAIRED_LABELS.get(column, column)
            out.append(_Column(column, header, "paired", parts))
            continue
        base = column.removesuffix("_mean")
        if f"{base}_std" in columns and column != f"{base}_std":
            taken.add(f"{base}_std")
            out.append(_Column(column, display_name(column, columns), "spread",
                               {"std": f"{base}_std"}))
            continue
        kind = "param" if column in param_columns(frame) else "plain"
        out.append(_Column(column, display_name(column, columns), kind, {}))
        taken.add(column)
    params = [c for c in out if c.kind == "param"]
    first = [c for key in FIRST for c in out if c.key == key]
    later = [c for c in out if c.kind == "paired" and c not in first]  # test-UAR pairs: last
    rest = [c for c in out if c not in first and c not in params and c not in later]
    return first + params + rest + later


def _breakable(header: str) -> str:
    """A header that may wrap after `_` and `.` (members_collapsed, model.pooling): narrower
    columns, so more of the table fits the page without scrolling sideways."""
    text = html.escape(header)
    return text.replace("_", "_<wbr>").replace(".", ".<wbr>")


def leaderboard_html(frame: pd.DataFrame, best_id: str | None) -> str:
    """The leaderboard frame (query.leaderboard) as a sortable HTML table; `best_id`: the trial
    every `vs_best` column compares with (query.best_trial)."""
    columns = _columns(frame)
    head = "".join(
        f'<th class="{c.kind}" title="{html.escape(_DOCS.get(c.key, c.key))}">'
        f"{_breakable(c.header)}</th>" for c in columns)
    rows = []
    for row in frame.to_dict("records"):
        status = str(row.get(schema.STATUS) or "")
        classes = [f"row-{status}"] if status else []
        if row.get(schema.TRIAL_ID) == best_id:
            classes.append("row-best")
        cells = "".join(c.render(row, best_id) for c in columns)
        rows.append(f'<tr class="{" ".join(classes)}">{cells}</tr>')
    footer = "".join(f"<li>{html.escape(line)}</li>" for line in frame.attrs.get("footer", []))
    return (f'<div class="scroll"><table class="board sortable"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>"
            + (f'<ul class="board-footer">{footer}</ul>' if footer else ""))


def html_table(frame: pd.DataFrame) -> str:
    """Any small frame (the failure table) as a sortable HTML table, cells escaped."""
    head = "".join(f"<th>{html.escape(display_name(str(c)))}</th>" for c in frame.columns)
    rows = []
    for row in frame.itertuples(index=False):
        cells = "".join(
            _cell("–", None, "na") if _missing(v) else _cell(html.escape(_number(v)), v)
            for v in row)
        rows.append(f"<tr>{cells}</tr>")
    return (f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def confusion_html(matrix: pd.DataFrame) -> str:
    """A confusion frame (query.confusion: rows true, columns predicted, named by class)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in matrix.columns)
    rows = "".join(
        f"<tr><th>{html.escape(str(name))}</th>"
        + "".join(f'<td class="num">{int(v)}</td>' for v in values) + "</tr>"
        for name, values in zip(matrix.index, matrix.to_numpy()))
    return (f'<table class="confusion"><thead><tr><th>true \\ predicted</th>{head}</tr></thead>'
            f"<tbody>{rows}</tbody></table>")


# Click a header: sort the rows by that column's data-v (numbers numerically, empty last);
# a second click reverses.
SORT_SCRIPT = """<script>
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0], i = th.cellIndex;
    var dir = th.dataset.dir === "asc" ? -1 : 1;
    table.querySelectorAll("th").forEach(function (h) { delete h.dataset.dir; });
    th.dataset.dir = dir === 1 ? "asc" : "desc";
    var rows = Array.from(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[i].dataset.v, y = b.cells[i].dataset.v;
      if (x === "" || y === "") { return (x === "") - (y === ""); }
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = isNaN(nx) || isNaN(ny) ? x.localeCompare(y) : nx - ny;
      return dir * c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
</script>"""

