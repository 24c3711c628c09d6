"""`data.ssl`: which frozen self-supervised encoder, which weights, which hidden states.

The section's defaults are DATA_DEFAULTS["ssl"] (trainables/config.py). `validate_ssl_config`
returns every problem of a section as (dotted key, message) pairs without raising, for the spec
(orchestrator/) to report at the sweep file's line; `ssl_settings` returns the checked, resolved
settings or raises ConfigError at the first problem (what the data layer calls).

The architectures are torchaudio's (torchaudio.models.wav2vec2_model / wavlm_model with the
parameters of the torchaudio.pipelines bundle of the same name), so a bundle's state dict always
fits. `arch` overrides builder arguments for tests and development (`tiny`, `small` or a mapping);
such an encoder has no published weights: checkpoint `random` or a state dict saved from it.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.errors import ConfigError

# data.ssl.model -> the torchaudio.pipelines bundle whose architecture (and weights) it is.
SSL_MODELS: dict[str, str] = {
    "wavlm_base_plus": "WAVLM_BASE_PLUS",
    "wavlm_base": "WAVLM_BASE",
    "wavlm_large": "WAVLM_LARGE",
    "hubert_base": "HUBERT_BASE",
    "hubert_large": "HUBERT_LARGE",
    "wav2vec2_base": "WAV2VEC2_BASE",
    "wav2vec2_large": "WAV2VEC2_LARGE",  # LibriSpeech 960 h, group-norm front-end
    "wav2vec2_large_lv60k": "WAV2VEC2_LARGE_LV60K",  # Libri-Light 60k h (SUPERB's "large")
}
CHECKPOINT_SPECIAL = ("torchaudio", "random")  # anything else is a path to a state dict
DTYPES = ("float16", "float32")  # the cache's dtype
DEVICES = ("auto", "cpu", "cuda")
KEYS = ("model", "checkpoint", "layers", "arch", "batch_seconds", "dtype", "device")
NORMALIZE_OK = ("none", "utterance")  # data.normalize values that features: ssl supports

_TINY_CONV = [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2
# `arch` presets. Same conv strides as the real models (320 samples = 20 ms per frame).
ARCH_PRESETS: dict[str, dict[str, Any]] = {
    # tests: a few thousand parameters, milliseconds per utterance
    "tiny": dict(extractor_conv_layer_config=_TINY_CONV, encoder_embed_dim=32,
                 encoder_num_layers=2, encoder_num_heads=2, encoder_ff_interm_features=64,
                 encoder_pos_conv_kernel=16, encoder_pos_conv_groups=4),
    # the CPU demo (search_spaces/ssl_head.yaml): a 4-layer, 256-wide encoder
    # (bench/ssl_features.py)
    "small": dict(extractor_conv_layer_config=[(128, 10, 5)] + [(128, 3, 2)] * 4
                  + [(128, 2, 2)] * 2, encoder_embed_dim=256, encoder_num_layers=4,
                  encoder_num_heads=4, encoder_ff_interm_features=1024,
                  encoder_pos_conv_kernel=64, encoder_pos_conv_groups=16),
}
# WavLM's relative-position buckets, scaled down with the presets (ignored by other families).
_WAVLM_PRESET = {"tiny": dict(encoder_num_buckets=32, encoder_max_distance=100),
                 "small": dict(encoder_num_buckets=64, encoder_max_distance=200)}


@dataclass(frozen=True)
class SslSettings:
    """A checked data.ssl section (see the module docstring)."""

    model: str
    checkpoint: str  # "torchaudio" | "random" | an absolute path
    layers: tuple[int, ...]  # hidden states kept, ascending; 0 = the first transformer input
    params: dict[str, Any]  # torchaudio builder arguments, `arch` applied
    model_type: str  # "Wav2Vec2" | "WavLM" (which torchaudio builder)
    normalize_waveform: bool  # the bundle layer-normalizes the waveform first (large models)
    arch: Any  # as given (None, a preset name or a mapping): part of the cache identity
    batch_seconds: float | None
    dtype: str
    device: str

    @property
    def n_hidden(self) -> int:
        """Hidden states the encoder has: one per transformer layer plus its input."""
        return int(self.params["encoder_num_layers"]) + 1

    @property
    def dim(self) -> int:
        return int(self.params["encoder_embed_dim"])

    @property
    def group_norm(self) -> bool:
        """A group-norm conv front-end normalizes over time: a padded batch changes it."""
        return self.params["extractor_mode"] == "group_norm"

    @property
    def bundle_name(self) -> str:
        return SSL_MODELS[self.model]


def ssl_section(data_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """data.ssl over its defaults (a partial section keeps the other defaults)."""
    from trainables.config import DATA_DEFAULTS

    given = data_cfg.get("ssl") or {}
    if not isinstance(given, Mapping):
        raise ConfigError("data.ssl", f"data.ssl must be a mapping such as {{model: "
                          f"wavlm_base_plus, checkpoint: torchaudio}}, but got {given!r}")
    return {**DATA_DEFAULTS["ssl"], **dict(given)}


def _suggest(word: Any, options: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def bundle(model: str) -> Any:
    """The torchaudio.pipelines bundle of a data.ssl.model name (nothing is downloaded)."""
    import torchaudio.pipelines

    return getattr(torchaudio.pipelines, SSL_MODELS[model])


def builder(model_type: str) -> Any:
    import torchaudio.models

    return {"Wav2Vec2": torchaudio.models.wav2vec2_model,
            "WavLM": torchaudio.models.wavlm_model}[model_type]


def _arch_overrides(arch: Any, model_type: str, problems: list[tuple[str, str]]
                    ) -> dict[str, Any]:
    if arch is None:
        return {}
    if isinstance(arch, str):
        if arch not in ARCH_PRESETS:
            problems.append(("data.ssl.arch", f"arch must be null, one of {list(ARCH_PRESETS)} "
                             f"or a mapping of torchaudio builder arguments, but got {arch!r}"
                             f"{_suggest(arch, ARCH_PRESETS)}"))
            return {}
        extra = _WAVLM_PRESET[arch] if model_type == "WavLM" else {}
        return {**ARCH_PRESETS[arch], **extra}
    if not isinstance(arch, Mapping):
        problems.append(("data.ssl.arch", f"arch must be null, a preset name or a mapping, but "
                         f"got {arch!r}"))
        return {}
    valid = [p for p in inspect.signature(builder(model_type)).parameters if p != "aux_num_out"]
    out: dict[str, Any] = {}
    for key, value in arch.items():
        if key not in valid:
            problems.append((f"data.ssl.arch.{key}", f"unknown {model_type} builder argument "
                             f"{key!r}{_suggest(key, valid)}; valid: {', '.join(valid)}"))
            continue
        if key == "extractor_conv_layer_config" and value is not None:
            ok = isinstance(value, list | tuple) and value and all(
                isinstance(t, list | tuple) and len(t) == 3 and all(
                    isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in t)
                for t in value)
            if not ok:
                problems.append((f"data.ssl.arch.{key}", "expected a list of [channels, "
                                 f"kernel, stride] triples of positive integers, but got "
                                 f"{value!r}"))
                continue
            value = [tuple(t) for t in value]
        out[key] = value
    return out


def _check_params(params: dict[str, Any], problems: list[tuple[str, str]]) -> None:
    ints = ("encoder_embed_dim", "encoder_num_layers", "encoder_num_heads",
            "encoder_ff_interm_features", "encoder_pos_conv_kernel", "encoder_pos_conv_groups")
    for key in ints:
        v = params.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            problems.append((f"data.ssl.arch.{key}", f"{key} must be an integer >= 1, but got "
                             f"{v!r}"))
            return
    dim = params["encoder_embed_dim"]
    for key in ("encoder_num_heads", "encoder_pos_conv_groups"):
        if dim % params[key]:
            problems.append((f"data.ssl.arch.{key}", f"{key} must divide encoder_embed_dim "
                             f"({dim}), but got {params[key]}"))


def _layers(value: Any, n_hidden: int, problems: list[tuple[str, str]]) -> tuple[int, ...]:
    if value == "all":
        return tuple(range(n_hidden))
    ok = isinstance(value, list | tuple) and len(value) > 0 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not ok:
        problems.append(("data.ssl.layers", f"layers must be 'all' or a non-empty list of "
                         f"hidden-state indices in [0, {n_hidden - 1}], but got {value!r}"))
        return tuple(range(n_hidden))
    if list(value) != sorted(set(value)):
        problems.append(("data.ssl.layers", f"layers must be distinct and ascending (the "
                         f"cache keeps them in that order; model.layer counts in it), but got "
                         f"{list(value)}; write {sorted(set(value))}"))
    bad = [v for v in value if not 0 <= v < n_hidden]
    if bad:
        problems.append(("data.ssl.layers", f"this encoder has hidden states 0..{n_hidden - 1} "
                         f"(0 = the transformer's input, i = the output of layer i), but layers "
                         f"names {bad}"))
    return tuple(sorted(set(v for v in value if 0 <= v < n_hidden)))


def save_command(model: str, path: object) -> str:
    """The shell command that writes `model`'s pretrained state dict to `path` (needs network)."""
    return f"python -m trainables.data.ssl save {model} {path}"


def missing_checkpoint_message(model: str, path: object) -> str:
    """What to do when data.ssl.checkpoint names a file that is not there."""
    name = SSL_MODELS[model]
    return (f"the state dict of data.ssl.model {model} (torchaudio.pipelines.{name}) is not "
            f"there. Create it once on a machine with network access:\n"
            f"  {save_command(model, path)}\n"
            f"(the same as: python -c \"import torch, torchaudio; m = torchaudio.pipelines."
            f"{name}.get_model(); torch.save(getattr(m, 'model', m).state_dict(), "
            f"'{path}')\"), or set data.ssl.checkpoint: torchaudio to download into torch's "
            f"hub cache")


def validate_ssl_config(ssl: Any, normalize: str | None = None
                        ) -> list[tuple[str, str]]:
    """Every problem of a data.ssl section (partial sections take the defaults) as (dotted key,
    message); [] when it is valid. `normalize`: data.normalize, checked against features ssl."""
    settings, problems = _resolve(ssl, normalize)
    return problems


def ssl_settings(data_cfg: Mapping[str, Any]) -> SslSettings:
    """The resolved data.ssl of a data config; ConfigError at its first problem."""
    settings, problems = _resolve(data_cfg.get("ssl"), data_cfg.get("normalize"))
    if problems:
        key, message = problems[0]
        raise ConfigError(key, message)
    assert settings is not None
    return settings


def _resolve(ssl: Any, normalize: str | None
             ) -> tuple[SslSettings | None, list[tuple[str, str]]]:
    problems: list[tuple[str, str]] = []
    if normalize is not None and normalize not in NORMALIZE_OK:
        problems.append(("data.normalize", f"features ssl takes data.normalize none or "
                         f"utterance (ssl_head normalizes every hidden state itself, "
                         f"model.layer_norm), but got {normalize!r}"))
    if ssl is not None and not isinstance(ssl, Mapping):
        return None, [*problems, ("data.ssl", f"data.ssl must be a mapping such as {{model: "
                                  f"wavlm_base_plus, checkpoint: torchaudio}}, but got {ssl!r}")]
    cfg = ssl_section({"ssl": ssl})
    for key in cfg:
        if key not in KEYS:
            problems.append((f"data.ssl.{key}", f"unknown key {key!r} in data.ssl"
                             f"{_suggest(key, KEYS)}; valid keys: {', '.join(KEYS)}"))
    model = cfg["model"]
    if model not in SSL_MODELS:
        return None, [*problems, ("data.ssl.model", f"unknown ssl model {model!r}"
                                  f"{_suggest(model, SSL_MODELS)}; valid: "
                                  f"{', '.join(SSL_MODELS)}")]
    b = bundle(model)
    params = dict(b._params)  # the architecture torchaudio builds for this bundle
    params.update(_arch_overrides(cfg["arch"], b._model_type, problems))
    _check_params(params, problems)
    checkpoint = cfg["checkpoint"]
    if not isinstance(checkpoint, str) or not checkpoint:
        problems.append(("data.ssl.checkpoint", f"checkpoint must be torchaudio, random or the "
                         f"path of a state dict, but got {checkpoint!r}"))
        checkpoint = "random"
    elif checkpoint not in CHECKPOINT_SPECIAL:
        checkpoint = str(Path(checkpoint).expanduser().resolve())
        if not Path(checkpoint).is_file():
            problems.append(("data.ssl.checkpoint",
                             f"{checkpoint}: {missing_checkpoint_message(model, checkpoint)}"))
    if checkpoint == "torchaudio" and cfg["arch"] is not None:
        problems.append(("data.ssl.arch", f"arch {cfg['arch']!r} changes the architecture, so "
                         f"the torchaudio weights of {model} do not fit it; use checkpoint: "
                         f"random (tests/development) or a state dict of that architecture"))
    n_hidden = int(params.get("encoder_num_layers") or 0) + 1
    layers = _layers(cfg["layers"], n_hidden, problems)
    bs = cfg["batch_seconds"]
    if bs is not None and (isinstance(bs, bool) or not isinstance(bs, int | float) or bs <= 0):
        problems.append(("data.ssl.batch_seconds", f"batch_seconds must be null (auto) or a "
                         f"number of seconds > 0, but got {bs!r}"))
    for key, valid in (("dtype", DTYPES), ("device", DEVICES)):
        if cfg[key] not in valid:
            problems.append((f"data.ssl.{key}", f"{key} must be one of {list(valid)}, but got "
                             f"{cfg[key]!r}{_suggest(cfg[key], valid)}"))
    settings = SslSettings(
        model=model, checkpoint=checkpoint, layers=layers, params=params,
        model_type=b._model_type, normalize_waveform=bool(b._normalize_waveform),
        arch=cfg["arch"], batch_seconds=None if bs is None else float(bs), dtype=cfg["dtype"],
        device=cfg["device"])
    return settings, problems
