"""The corpus interface: every corpus turns the sweep file's `data` section into utterances."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from trainables.data.base import Utterance
from trainables.errors import ConfigError, DataError

Progress = Callable[[str], None]


@dataclass
class CorpusContent:
    """What a corpus yields: utterances, the class names (label order) and load info."""

    utterances: list[Utterance]
    classes: list[str]
    info: dict[str, Any] = field(default_factory=dict)  # e.g. skipped: int, skipped_examples


class Corpus(ABC):
    """One corpus kind. `load` is the template: `_load` reads, then the content is validated."""

    name: ClassVar[str]
    # The facts the rest of the product asks about a corpus, declared here (a new corpus is its
    # file plus one line in corpora.py): the sweep file must give data.root; how `corpus: multi`
    # maps its labels onto multi.SHARED_CLASSES (None: its labels are already those names);
    # the folds `corpus: multi` cuts it by when its entry names none (None: data.folds).
    needs_root: ClassVar[bool] = False
    shared_labels: ClassVar[dict[str, str] | None] = None
    default_folds: ClassVar[str | None] = None

    def load(self, data_cfg: dict[str, Any], progress: Progress | None = None) -> CorpusContent:
        content = self._load(data_cfg, progress)
        self._validate(content, data_cfg.get("root") or self.name)
        content.info.setdefault("corpus", self.name)
        return content

    def fingerprint(self, data_cfg: dict[str, Any]) -> str:
        """Cheap text that changes when the corpus on disk changes (part of the cache key)."""
        return ""

    @abstractmethod
    def _load(self, data_cfg: dict[str, Any], progress: Progress | None) -> CorpusContent: ...

    @staticmethod
    def _validate(content: CorpusContent, where: object) -> None:
        if not content.utterances:
            raise DataError(where, "no utterances found; expected at least one labelled clip")
        known = set(content.classes)
        counts = Counter(u.label for u in content.utterances)
        unknown = sorted(set(counts) - known)
        if unknown:
            raise DataError(where, f"labels {unknown} are not among the classes {content.classes}")
        empty = [c for c in content.classes if counts[c] == 0]
        if empty:
            raise DataError(where, f"classes {empty} have no utterances; every class of "
                                   f"{content.classes} needs at least one (found {dict(counts)})")
        ids = Counter(u.id for u in content.utterances)
        dup = [i for i, n in ids.items() if n > 1]
        if dup:
            raise DataError(where, f"utterance ids must be unique; duplicated: {dup[:5]}")


def require_root(data_cfg: dict[str, Any], what: str) -> Path:
    """`data.root` as an existing path, or a ConfigError/DataError saying what was expected."""
    root = data_cfg.get("root")
    if not root:
        corpus = data_cfg.get("corpus")
        raise ConfigError("data.root", f"corpus {corpus!r} needs data.root: {what}")
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(path, f"data.root does not exist; expected {what}")
    return path


def class_subset(data_cfg: dict[str, Any], all_classes: list[str], corpus: str) -> list[str]:
    """`data.classes` as a list (a subset of `all_classes`, in its order) or all of them."""
    classes = data_cfg.get("classes")
    if not isinstance(classes, list):
        return list(all_classes)
    bad = [c for c in classes if c not in all_classes]
    if bad or not classes:
        raise ConfigError("data.classes", f"{corpus} classes must be a non-empty subset of "
                                          f"{all_classes}, found {classes}")
    return list(classes)
