"""SpecError: what is wrong in a sweep file, where (file, line, key path) and what was expected.

The spec package's face (orchestrator/sweepfile/__init__.py) exports it; every module of the
package
(yaml_loader, distributions, checks, sections, params, distill, load) raises it.
"""

from __future__ import annotations

from pathlib import Path

from trainables.errors import SersweepError


class SpecError(SersweepError):
    """A sweep file (or a --set override) is wrong.

    `file` names the sweep file, `key` the dotted key path (e.g. `search.params.train.lr`), `line`
    the 1-based line in the file where known, `via` the command-line override that set the value
    (e.g. `--set train.lr=-1`). str() reads `<file>:<line>: <key>: <message>`.
    """

    def __init__(
        self,
        file: str | Path | None,
        key: str | None,
        message: str,
        line: int | None = None,
        via: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.key = key or None
        self.message = message
        self.line = line
        self.via = via
        super().__init__(self._render())

    def _render(self) -> str:
        where = self.file or "<sweep file>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        parts = [where]
        if self.key:
            parts.append(f"{self.key} (from {self.via})" if self.via else self.key)
        elif self.via:
            parts.append(f"(from {self.via})")
        return ": ".join([*parts, self.message])

    def located(
        self, file: str | Path | None, line: int | None = None, via: str | None = None
    ) -> SpecError:
        """A copy with the file / line / override filled in where this one lacks them."""
        return SpecError(
            self.file or file,
            self.key,
            self.message,
            self.line if self.line is not None else line,
            self.via or via,
        )

    def __reduce__(self) -> tuple[type[SpecError], tuple[object, ...]]:
        return (SpecError, (self.file, self.key, self.message, self.line, self.via))
