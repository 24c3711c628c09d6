"""Model registry: one family per file, selected by `model.name` in the sweep file.

Contract for every family (a plain nn.Module):
- constructor: keyword-only `n_classes: int, n_features: int` (feature dim of one time step, 1 for
  raw audio) plus the searchable hyper-parameters, all with defaults;
- class attribute `INPUTS`: the feature kinds it accepts ("raw", "logmel", "mfcc", "compare");
- forward(x, lengths, return_hidden=False): x is (B, S) raw audio or (B, T, F) frames, lengths
  (B,) valid samples/frames; returns logits (B, n_classes), or (logits, hiddens) with `hiddens` a
  list of pooled intermediate representations, each (B, D_i), for distillation.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from trainables.errors import ConfigError
from trainables.models.sample_noise import per_sample_dropout

MODELS: dict[str, type[nn.Module]] = {}


def build_model(model_cfg: dict[str, Any], *, n_features: int, n_classes: int) -> nn.Module:
    """Instantiate `model_cfg["name"]` with the rest of `model_cfg` as constructor arguments; its
    nn.Dropout layers become per-sample ones (trainables/models/sample_noise.py)."""
    name = model_cfg.get("name")
    if name not in MODELS:
        raise ConfigError("model.name", f"unknown model {name!r}; valid: {sorted(MODELS)}")
    kwargs = {k: v for k, v in model_cfg.items() if k != "name"}
    params = inspect.signature(MODELS[name]).parameters
    valid = sorted(k for k in params if k not in ("n_classes", "n_features"))
    for key in kwargs:
        if key not in valid:
            raise ConfigError(
                f"model.{key}", f"{name} has no hyper-parameter {key!r}; valid: {valid}"
            )
    model = MODELS[name](n_classes=n_classes, n_features=n_features, **kwargs)
    return per_sample_dropout(model)


# The families register below the registry so that their modules may import this package.
from trainables.models.cnn_lstm import CnnLstm  # noqa: E402
from trainables.models.resnet_lstm import ResNetLstm  # noqa: E402
from trainables.models.sincnet import SincNet  # noqa: E402
from trainables.models.ssl_head import SslHead  # noqa: E402
from trainables.models.transformer import Transformer  # noqa: E402
from trainables.models.vggish_lstm import VggishLstm  # noqa: E402

MODELS.update(
    {
        "cnn_lstm": CnnLstm,
        "sincnet": SincNet,
        "transformer": Transformer,
        "resnet_lstm": ResNetLstm,
        "vggish_lstm": VggishLstm,
        "ssl_head": SslHead,
    }
)
