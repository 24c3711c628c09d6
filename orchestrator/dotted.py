"""Dotted keys (`train.lr`) into nested configs: the one lookup every orchestrator module uses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def get_dotted(config: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """`get_dotted({"train": {"lr": 1}}, "train.lr") == 1`; `default` when any part is absent."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node
