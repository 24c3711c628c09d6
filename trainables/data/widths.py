"""The feature width (n_features of one time step) a data config will produce, known before any
audio is read: the spec builds the model on the meta device with it, the planner estimates memory
with it. An extractor class in trainables/data/features.py may define a classmethod
`feature_width(data_cfg) -> int` (a new kind then needs no entry here); the built-in kinds read
the same keys and defaults their extractors use."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainables.config import DATA_DEFAULTS
from trainables.data.features import FEATURES
from trainables.errors import ConfigError

COMPARE_LLDS = 65  # openSMILE ComParE_2016 low-level descriptors (x2 with their deltas)


def feature_width(data_cfg: Mapping[str, Any]) -> int:
    """n_features of one time step for `data_cfg` (1 for raw audio); ConfigError for an unknown
    `data.features`."""
    cfg = {**DATA_DEFAULTS, **{k: v for k, v in data_cfg.items() if v is not None}}
    kind = cfg["features"]
    if kind not in FEATURES:
        raise ConfigError("data.features", f"unknown features {kind!r}; valid: {sorted(FEATURES)}")
    own = getattr(FEATURES[kind], "feature_width", None)
    if callable(own):
        return int(own(cfg))
    if kind == "raw":
        return 1
    if kind == "mfcc":
        return int(cfg["n_mfcc"])
    if kind == "compare":
        return 2 * COMPARE_LLDS if cfg["compare_deltas"] else COMPARE_LLDS
    if kind == "logmel":
        return int(cfg["n_mels"])
    raise ConfigError("data.features", f"features {kind!r} define no feature_width(data_cfg) "
                      "classmethod, so the model's input width is unknown before featurizing")
