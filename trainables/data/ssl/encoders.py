"""Building the frozen encoder of data.ssl: torchaudio's architecture, then its weights.

`checkpoint`:
- `torchaudio`: the torchaudio.pipelines bundle's weights, downloaded once into torch's hub cache
  (`torch.hub.get_dir()/checkpoints`); offline, a cached download still works.
- a path: a state dict saved by torch.save (e.g. by `python -m trainables.data.ssl save MODEL
  PATH`, which writes the bundle's weights), read with torch.load(weights_only=True).
- `random`: random initialisation with a fixed seed (tests, development; no pretrained knowledge).

`checkpoint_identity` names the weights in the feature cache's key: a content hash for a file, so
a replaced file is never served stale features and a copied one still hits the cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainables.data.ssl.settings import (
    SslSettings,
    builder,
    bundle,
    missing_checkpoint_message,
    save_command,
)
from trainables.errors import DataError

RANDOM_SEED = 0
TORCHAUDIO_URL = "https://download.pytorch.org/torchaudio/models/"
BUILDS = {"count": 0}  # encoders built in this process (tests: a cache hit builds none)
_HASHES: dict[tuple[str, int, int], str] = {}


def _missing(settings: SslSettings) -> str:
    return missing_checkpoint_message(settings.model, settings.checkpoint)


def check_checkpoint_file(settings: SslSettings) -> None:
    """DataError naming a checkpoint path that is not a file, and how to create it."""
    if settings.checkpoint not in ("random", "torchaudio"):
        if not Path(settings.checkpoint).is_file():
            raise DataError(settings.checkpoint, _missing(settings))


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, memoized per (path, size, mtime) in this process."""
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def checkpoint_identity(settings: SslSettings) -> str:
    """What the weights are, for the cache key (see the module docstring)."""
    if settings.checkpoint == "random":
        # the initialisation is torch's: another torch version may draw other weights
        return f"random:{RANDOM_SEED}:torch{torch.__version__}"
    if settings.checkpoint == "torchaudio":
        return f"torchaudio:{bundle(settings.model)._path}"
    path = Path(settings.checkpoint)
    if not path.is_file():
        raise DataError(path, _missing(settings))
    return f"sha256:{file_sha256(path)}"


def checkpoint_fingerprint(settings: SslSettings) -> str:
    """A cheap identity (path, size, mtime) for the prepared-data cache key: no hashing."""
    if settings.checkpoint in ("random", "torchaudio"):
        return checkpoint_identity(settings)
    path = Path(settings.checkpoint)
    if not path.is_file():
        return f"missing:{path}"
    st = path.stat()
    return f"file:{path}:{st.st_size}:{st.st_mtime_ns}"


def build_architecture(settings: SslSettings) -> nn.Module:
    """The torchaudio Wav2Vec2Model of `settings`, randomly initialised (seeded), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        model = builder(settings.model_type)(**settings.params)
    return model.eval()


def _unwrap(state: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise DataError(path, f"expected a state dict (a dict of tensors saved by torch.save), "
                        f"but it holds {type(state).__name__}")
    keys = list(state)
    # bundle.get_model() of a large model wraps it (waveform normalization): keys "model.*"
    if keys and all(k.startswith("model.") for k in keys):
        state = {k[len("model."):]: v for k, v in state.items()}
    return state


def load_state_file(model: nn.Module, settings: SslSettings) -> None:
    path = Path(settings.checkpoint)
    if not path.is_file():
        raise DataError(path, _missing(settings))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise DataError(path, f"cannot read it as a state dict saved by torch.save: {exc}"
                        ) from None
    state = _unwrap(state, path)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape: another architecture
        raise DataError(path, f"this state dict does not fit data.ssl.model {settings.model} "
                        f"(arch {settings.arch!r}): {str(exc).splitlines()[-1].strip()}"
                        ) from None
    if result.missing_keys or result.unexpected_keys:
        raise DataError(path, f"this state dict does not fit data.ssl.model {settings.model} "
                        f"(arch {settings.arch!r}): missing {result.missing_keys[:4]}"
                        f"{' ...' if len(result.missing_keys) > 4 else ''}, unexpected "
                        f"{result.unexpected_keys[:4]}"
                        f"{' ...' if len(result.unexpected_keys) > 4 else ''}")


def download_state_dict(settings: SslSettings) -> dict[str, torch.Tensor]:
    """The bundle's pretrained weights (downloaded once into torch's hub cache)."""
    b = bundle(settings.model)
    try:
        model = b.get_model()
    except OSError as exc:  # urllib's URLError/HTTPError are OSErrors: offline or blocked
        cached = Path(torch.hub.get_dir()) / "checkpoints" / b._path
        raise DataError(TORCHAUDIO_URL + b._path, f"cannot download the weights of "
                        f"data.ssl.model {settings.model} ({exc}). Offline: copy the file to "
                        f"{cached}, or save the state dict on a machine with network access "
                        f"({save_command(settings.model, 'PATH')}) and set "
                        f"data.ssl.checkpoint: PATH") from None
    return getattr(model, "model", model).state_dict()


def build_encoder(settings: SslSettings) -> nn.Module:
    """The frozen encoder of `settings` on the CPU, in eval mode, gradients off."""
    model = build_architecture(settings)
    if settings.checkpoint == "torchaudio":
        model.load_state_dict(download_state_dict(settings))
    elif settings.checkpoint != "random":
        load_state_file(model, settings)
    for p in model.parameters():
        p.requires_grad_(False)
    BUILDS["count"] += 1
    return model


def save_pretrained(model: str, path: str | os.PathLike) -> Path:
    """Write the torchaudio bundle's state dict of data.ssl.model `model` to `path`."""
    from trainables.data.ssl.settings import ssl_settings

    settings = ssl_settings({"ssl": {"model": model, "checkpoint": "torchaudio"}})
    out = Path(path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(download_state_dict(settings), out)
    return out
