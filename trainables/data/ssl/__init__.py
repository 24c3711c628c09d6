"""Self-supervised speech front-ends: frozen WavLM / HuBERT / wav2vec2 hidden states, extracted
once per data config into a memory-mapped cache that every trial reads (model.name: ssl_head).

- settings.py  data.ssl: defaults, validation (`validate_ssl_config`), the resolved settings
- encoders.py  the torchaudio architecture and its weights (torchaudio bundle | file | random)
- extract.py   the batched, exact extraction of every kept hidden state
- store.py     the cache layout and `SslFeatures`, the lazy handle PreparedData carries
- feature.py   `SslFeatureExtractor`, registered as FEATURES["ssl"]
- memory.py    extraction memory and the head's input shape, for the planner

`python -m trainables.data.ssl save MODEL PATH` writes a model's pretrained state dict (online).
"""

from __future__ import annotations

from trainables.data.ssl.extraction_memory import (
    ExtractionMemory,
    cache_bytes,
    estimate_extraction_memory,
    extraction_memory,
    ssl_input_shape,
)
from trainables.data.ssl.settings import (
    ARCH_PRESETS,
    CHECKPOINT_SPECIAL,
    NORMALIZE_OK,
    SSL_MODELS,
    SslSettings,
    ssl_section,
    ssl_settings,
    validate_ssl_config,
)
from trainables.data.ssl.store import SslCacheMissing, SslFeatures

__all__ = [
    "ARCH_PRESETS", "CHECKPOINT_SPECIAL", "NORMALIZE_OK", "SSL_MODELS", "ExtractionMemory",
    "SslCacheMissing", "SslFeatures", "SslSettings", "cache_bytes", "estimate_extraction_memory",
    "extraction_memory", "ssl_input_shape", "ssl_section", "ssl_settings", "validate_ssl_config",
]
