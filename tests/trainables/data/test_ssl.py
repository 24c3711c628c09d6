"""features: ssl — settings, exact batched extraction, the memory-mapped cache (hit without
re-extraction, a path through pickles), checkpoints by path, and the extraction-memory estimate.
Every encoder is torchaudio's architecture at the `tiny` size, random-initialised: no network."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from trainables.config import DATA_DEFAULTS, with_defaults
from trainables.data import FEATURES, prepare_data
from trainables.data.ssl import (
    SSL_MODELS,
    SslFeatures,
    estimate_extraction_memory,
    extraction_memory,
    ssl_input_shape,
    ssl_settings,
    validate_ssl_config,
)
from trainables.data.ssl.encoders import BUILDS, build_architecture, build_encoder
from trainables.data.ssl.extract import conv_config, frames_of, hidden_states, min_samples
from trainables.data.ssl.store import FEATURES_FILE
from trainables.data.widths import feature_width
from trainables.errors import ConfigError, DataError

TINY = {"model": "wavlm_base", "checkpoint": "random", "arch": "tiny"}
N_UTT = 40  # the smallest synthetic corpus


def ssl_cfg(cache_dir: str | Path, ssl: dict | None = None, **over: object) -> dict:
    return with_defaults({"corpus": "synthetic", "synthetic_utterances": N_UTT,
                          "max_seconds": 1.5, "features": "ssl", "normalize": "none",
                          "use_folds": 1, "cache_dir": str(cache_dir),
                          "ssl": {**TINY, **(ssl or {})}, **over}, DATA_DEFAULTS)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ssl_cache")


def padded_batch(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = torch.tensor(lengths)
    waves = 0.1 * torch.randn(len(lengths), max(lengths), generator=g)
    return waves * (torch.arange(max(lengths))[None] < n[:, None]), n


# -- settings -------------------------------------------------------------------------------------
def test_ssl_is_a_registered_feature_kind_with_its_width() -> None:
    assert "ssl" in FEATURES
    assert feature_width({"features": "ssl", "ssl": TINY}) == 32
    assert feature_width({"features": "ssl", "ssl": {"model": "hubert_large"}}) == 1024


def test_every_model_name_resolves_to_its_bundle_architecture() -> None:
    dims = {name: ssl_settings({"ssl": {"model": name}}) for name in SSL_MODELS}
    assert {n: (s.dim, s.n_hidden) for n, s in dims.items()} == {
        "wavlm_base_plus": (768, 13), "wavlm_base": (768, 13), "wavlm_large": (1024, 25),
        "hubert_base": (768, 13), "hubert_large": (1024, 25), "wav2vec2_base": (768, 13),
        "wav2vec2_large": (1024, 25), "wav2vec2_large_lv60k": (1024, 25)}
    assert dims["wavlm_large"].normalize_waveform and not dims["wavlm_base"].normalize_waveform
    assert dims["hubert_base"].group_norm and not dims["hubert_large"].group_norm


def test_validation_reports_every_problem_with_its_key() -> None:
    problems = dict(validate_ssl_config(
        {"model": "wavlm_bse", "layers": [1]}, normalize="none"))
    assert "did you mean 'wavlm_base'" in problems["data.ssl.model"]
    problems = validate_ssl_config({"layers": [6, 3, 14], "arch": "tiny", "dtype": "half",
                                    "device": "gpu", "colour": 1, "batch_seconds": 0},
                                   normalize="train")
    keys = [k for k, _ in problems]
    assert keys == ["data.normalize", "data.ssl.colour", "data.ssl.arch", "data.ssl.layers",
                    "data.ssl.layers", "data.ssl.batch_seconds", "data.ssl.dtype",
                    "data.ssl.device"]
    text = dict(problems)
    assert "torchaudio weights of wavlm_base_plus do not fit" in text["data.ssl.arch"]
    layer_messages = [m for k, m in problems if k == "data.ssl.layers"]
    assert "write [3, 6, 14]" in layer_messages[0] and "0..2" in layer_messages[1]
    assert validate_ssl_config({"model": "hubert_base", "layers": [0, 6, 12]}, "none") == []
    assert validate_ssl_config(None, "utterance") == []  # the defaults are valid
    with pytest.raises(ConfigError) as err:
        ssl_settings({"ssl": {**TINY, "arch": {"encoder_embed_dimm": 8}}})
    assert err.value.key == "data.ssl.arch.encoder_embed_dimm"


# -- extraction -----------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["wavlm_base", "hubert_large", "wav2vec2_large_lv60k"])
def test_batched_extraction_equals_one_utterance_at_a_time(model: str) -> None:
    """group-norm front-ends (base) and layer-norm ones with waveform normalization (large):
    an utterance's hidden states do not depend on its batch-mates; layers 1.. equal torchaudio's
    own extract_features on the lone utterance."""
    settings = ssl_settings({"ssl": {**TINY, "model": model}})
    encoder = build_encoder(settings)
    waves, n = padded_batch([8000, 5600, 3300])
    with torch.inference_mode():
        states, frames = hidden_states(encoder, waves, n, settings, settings.n_hidden - 1)
        assert len(states) == settings.n_hidden == 3
        assert frames.tolist() == [frames_of(k, conv_config(settings)) for k in n.tolist()]
        for i, k in enumerate(n.tolist()):
            alone, _ = hidden_states(encoder, waves[i: i + 1, :k], n[i: i + 1], settings, 2)
            for batched, single in zip(states, alone):
                torch.testing.assert_close(batched[i, : frames[i]], single[0], atol=1e-5,
                                           rtol=1e-4)
            x = waves[i: i + 1, :k]
            if settings.normalize_waveform:
                x = torch.nn.functional.layer_norm(x, x.shape)
            reference, _ = encoder.extract_features(x)
            for mine, theirs in zip(states[1:], reference):
                torch.testing.assert_close(mine[i, : frames[i]], theirs[0], atol=1e-5,
                                           rtol=1e-4)


def test_frame_rule_and_shortest_input() -> None:
    conv = conv_config(ssl_settings({"ssl": {"model": "wavlm_base"}}))
    assert min_samples(conv) == 400 and frames_of(400, conv) == 1 and frames_of(399, conv) == 0
    assert frames_of(16000, conv) == 49  # 20 ms frames, 25 ms receptive field


# -- the cache ------------------------------------------------------------------------------------
def test_extract_cache_and_reload_without_recomputing(shared_cache: Path) -> None:
    cfg = ssl_cfg(shared_cache)
    before = BUILDS["count"]
    messages: list[str] = []
    data = prepare_data(cfg, messages.append)
    assert BUILDS["count"] == before + 1 and data.info["cache"] == "miss"
    assert any("audio-s/s" in m for m in messages)  # progress lines
    feats = data.features
    assert isinstance(feats, SslFeatures) and data.feature_kind == "ssl"
    assert data.n_features == 32 and data.frame_rate == 50.0
    assert tuple(feats.shape) == (N_UTT, int(data.lengths.max()), 3, 32)
    assert tuple(feats.shape[1:]) == ssl_input_shape(cfg)  # the longest utterance is >= 1.5 s
    npy = Path(feats.directory) / FEATURES_FILE
    mtime = npy.stat().st_mtime_ns
    batch = feats[torch.tensor([3, 0, 7])]
    assert batch.dtype == torch.float16 and batch.shape[1] == int(data.lengths[[3, 0, 7]].max())
    for j, i in enumerate([3, 0, 7]):
        n = int(data.lengths[i])
        assert torch.equal(batch[j, :n], feats[i]) and not batch[j, n:].any()

    again = prepare_data(cfg, messages.append)  # prepared-data cache hit
    assert again.info["cache"] == "hit" and BUILDS["count"] == before + 1
    other = prepare_data({**cfg, "n_mels": 32}, messages.append)  # other prepared key, same audio
    assert other.info["cache"] == "miss" and BUILDS["count"] == before + 1
    assert other.features.directory == feats.directory and npy.stat().st_mtime_ns == mtime
    assert torch.equal(other.features[torch.arange(N_UTT)], feats[torch.arange(N_UTT)])


def test_handle_pickles_as_a_path_and_reads_the_same_rows(shared_cache: Path) -> None:
    data = prepare_data(ssl_cfg(shared_cache))
    blob = pickle.dumps(data)
    assert len(blob) < 16_000 < data.features.nbytes  # the arrays never travel
    shipped = pickle.loads(blob)
    idx = torch.tensor([5, 1])
    assert torch.equal(shipped.features[idx], data.features[idx])
    assert isinstance(shipped.features.rows, np.memmap)


def test_a_relative_cache_dir_still_reads_from_another_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = prepare_data(ssl_cfg("rel_cache"))  # relative, as the default .cache/sersweep
    assert Path(data.features.directory).is_absolute()
    blob = pickle.dumps(data)
    elsewhere = tmp_path / "trial_dir"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # Ray runs a trial in its own directory
    assert torch.equal(pickle.loads(blob).features[2], data.features[2])


def test_downsample_and_utterance_normalization_are_applied_while_extracting(
    shared_cache: Path,
) -> None:
    plain = prepare_data(ssl_cfg(shared_cache))
    data = prepare_data(ssl_cfg(shared_cache, downsample=2, normalize="utterance"))
    assert data.frame_rate == 25.0
    assert torch.equal(data.lengths, (plain.lengths + 1) // 2)
    x = data.features[0].float()  # (T, L, D), one utterance
    torch.testing.assert_close(x.mean(0), torch.zeros_like(x[0]), atol=2e-2, rtol=0)
    assert data.features.directory != plain.features.directory


def test_a_subset_of_layers_is_kept_in_order(shared_cache: Path) -> None:
    full = prepare_data(ssl_cfg(shared_cache))
    part = prepare_data(ssl_cfg(shared_cache, ssl={"layers": [0, 2]}))
    assert part.features.shape[2] == 2 and part.features.meta["layers"] == [0, 2]
    assert torch.equal(part.features[4], full.features[4][:, [0, 2]])


def test_a_deleted_cache_is_extracted_again(tmp_path: Path) -> None:
    cfg = ssl_cfg(tmp_path)
    first = prepare_data(cfg)
    for f in Path(first.features.directory).iterdir():
        f.unlink()
    os.rmdir(first.features.directory)
    before = BUILDS["count"]
    again = prepare_data(cfg)  # the prepared entry names a missing cache: rebuilt
    assert BUILDS["count"] == before + 1 and again.features[0].shape == first.features[0].shape


def test_normalize_train_is_refused_before_the_corpus_loads(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        prepare_data(ssl_cfg(tmp_path, normalize="train"))
    assert err.value.key == "data.normalize" and "layer_norm" in err.value.message
    assert not (tmp_path / "synthetic").exists()


# -- checkpoints ----------------------------------------------------------------------------------
def test_checkpoint_round_trip_by_path(tmp_path: Path, shared_cache: Path) -> None:
    settings = ssl_settings({"ssl": TINY})
    trained = build_architecture(settings)
    with torch.no_grad():  # weights unlike the random init, so that loading them shows
        for p in trained.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = tmp_path / "tiny_wavlm.pt"
    torch.save(trained.state_dict(), path)
    loaded = build_encoder(ssl_settings({"ssl": {**TINY, "checkpoint": str(path)}}))
    waves, n = padded_batch([6000, 4000], seed=3)
    with torch.inference_mode():
        mine, _ = hidden_states(loaded, waves, n, settings, 2)
        theirs, _ = hidden_states(trained, waves, n, settings, 2)
        randomly, _ = hidden_states(build_encoder(settings), waves, n, settings, 2)
    assert all(torch.equal(a, b) for a, b in zip(mine, theirs))
    assert not torch.allclose(mine[-1], randomly[-1])
    by_path = prepare_data(ssl_cfg(shared_cache, ssl={"checkpoint": str(path)}))
    by_random = prepare_data(ssl_cfg(shared_cache))
    assert by_path.features.directory != by_random.features.directory
    assert by_path.features.meta["weights"].startswith("sha256:")


def test_missing_checkpoint_names_the_file_and_how_to_make_it(tmp_path: Path) -> None:
    path = tmp_path / "models" / "wavlm_base_plus.pt"
    ssl = {"model": "wavlm_base_plus", "arch": None, "checkpoint": str(path)}
    assert [k for k, _ in validate_ssl_config(ssl, "none")] == ["data.ssl.checkpoint"]
    with pytest.raises(ConfigError) as err:
        prepare_data(ssl_cfg(tmp_path, ssl=ssl))
    assert err.value.key == "data.ssl.checkpoint"
    text = err.value.message
    assert text.startswith(str(path))
    assert f"python -m trainables.data.ssl save wavlm_base_plus {path}" in text
    assert "torchaudio.pipelines.WAVLM_BASE_PLUS.get_model()" in text
    assert "checkpoint: torchaudio" in text
    assert not (tmp_path / "synthetic").exists()  # refused before the corpus was read


def test_a_state_dict_of_another_architecture_is_refused(tmp_path: Path) -> None:
    other = build_architecture(ssl_settings({"ssl": {**TINY, "model": "hubert_base"}}))
    path = tmp_path / "hubert.pt"
    torch.save(other.state_dict(), path)
    with pytest.raises(DataError) as err:
        build_encoder(ssl_settings({"ssl": {**TINY, "checkpoint": str(path)}}))
    assert "does not fit data.ssl.model wavlm_base" in err.value.message
    assert err.value.path == str(path)


# -- memory ---------------------------------------------------------------------------------------
def test_extraction_memory_is_linear_in_the_batch_and_counts_the_weights() -> None:
    cfg = {"max_seconds": 1.0, "ssl": TINY}
    settings = ssl_settings(cfg)
    line = extraction_memory(settings, 16000, "float32")
    params = 4 * sum(p.numel() for p in build_architecture(settings).parameters())
    assert line.fixed_bytes >= params and line.per_utterance_bytes > 0
    # the stacked output alone: frames x hidden states x dims x 4 bytes
    assert line.per_utterance_bytes > frames_of(16000, conv_config(settings)) * 3 * 32 * 4
    one, four = (estimate_extraction_memory(cfg, batch=b, precision="float32") for b in (1, 4))
    assert four - one == 3 * line.per_utterance_bytes


# -- CUDA (skipped without a GPU) -----------------------------------------------------------------
@pytest.mark.gpu
def test_cuda_extraction_in_float16_matches_the_cpu_and_fits_its_measured_batch(
    tmp_path: Path,
) -> None:
    cpu = prepare_data(ssl_cfg(tmp_path / "cpu", ssl={"device": "cpu", "dtype": "float32"}))
    gpu = prepare_data(ssl_cfg(tmp_path / "gpu", ssl={"device": "cuda", "dtype": "float32"}))
    meta = gpu.features.meta
    assert meta["device"].startswith("cuda") and meta["precision"] == "float16"
    assert torch.equal(gpu.lengths, cpu.lengths)
    a, b = gpu.features[torch.arange(N_UTT)], cpu.features[torch.arange(N_UTT)]
    assert (a - b).abs().max() <= 2e-2 * b.abs().max()  # fp16 activations vs fp32
    settings = ssl_settings({"ssl": TINY})
    line = extraction_memory(settings, 32000, "float16")
    from trainables.data.ssl.extraction_memory import measure_extraction_memory

    real = measure_extraction_memory(settings, 32000, 4, "cuda")
    assert real <= line.peak(4) * 1.5 and line.peak(4) <= real * 3  # fake CPU path vs cuDNN
