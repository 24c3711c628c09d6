"""ssl_head: shapes, padding invariance, the layer weights, errors, its memory estimate against
the measured step, and training on real (tiny-encoder) ssl features through the trainer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from trainables import names
from trainables.config import DATA_DEFAULTS, TRAIN_DEFAULTS, with_defaults
from trainables.data import prepare_data
from trainables.errors import ConfigError
from trainables.memory import estimate_step_memory, measure_step_peaks
from trainables.models import MODELS, build_model
from trainables.models.ssl_head import SSL_POOLINGS, SslHead
from trainables.train import LockstepTrainer

SMALL = {"proj_dim": 16, "attention_dim": 8, "head_hidden": [16], "dropout": 0.0}


def head(**kwargs: object) -> SslHead:
    torch.manual_seed(0)
    model = build_model({"name": "ssl_head", **SMALL, **kwargs}, n_features=12, n_classes=4)
    return model.eval()


def batch(steps: int = 20, layers: int = 5, size: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([steps, steps * 3 // 4, steps // 2][:size])
    x = torch.randn(size, steps, layers, 12, generator=g)
    return x * (torch.arange(steps)[None, :, None, None] < lengths[:, None, None, None]), lengths


def test_registered_for_ssl_features_only() -> None:
    assert MODELS["ssl_head"] is SslHead and SslHead.INPUTS == ("ssl",)


@pytest.mark.parametrize("pooling", SSL_POOLINGS)
@pytest.mark.parametrize("layer", ["weighted", 2])
def test_shapes_hiddens_and_padding_invariance(pooling: str, layer: str | int) -> None:
    model = head(pooling=pooling, layer=layer)
    x, lengths = batch()
    logits, hiddens = model(x, lengths, return_hidden=True)
    width = 32 if pooling in ("stats", "attentive") else 16
    assert logits.shape == (3, 4) and [h.shape for h in hiddens] == [(3, width), (3, 16)]
    longer = torch.cat([x, torch.randn(3, 7, 5, 12)], dim=1)  # more (garbage) padding
    with torch.no_grad():
        torch.testing.assert_close(model(longer, lengths), logits, atol=1e-5, rtol=1e-5)


def test_a_three_dimensional_input_is_one_hidden_state() -> None:
    model = head(layer=0)
    x, lengths = batch(layers=1)
    with torch.no_grad():
        torch.testing.assert_close(model(x[:, :, 0], lengths), model(x, lengths))


def test_weighted_layers_train_only_the_weights_of_the_present_layers() -> None:
    model = head().train()
    x, lengths = batch(layers=5)
    weights = model.layer_weights(5)
    assert weights.shape == (5,) and math.isclose(float(weights.detach().sum()), 1.0, rel_tol=1e-6)
    model(x, lengths).sum().backward()
    grad = model.layer_logits.grad
    assert grad[:5].abs().sum() > 0 and not grad[5:].any()


def test_a_fixed_layer_ignores_the_others() -> None:
    model = head(layer=1)
    assert model.layer_logits is None  # no weights to learn
    assert model.layer_weights(5).tolist() == [0.0, 1.0, 0.0, 0.0, 0.0]
    x, lengths = batch()
    changed = x.clone()
    changed[:, :, [0, 2, 3, 4]] = torch.randn_like(changed[:, :, [0, 2, 3, 4]])
    with torch.no_grad():
        torch.testing.assert_close(model(changed, lengths), model(x, lengths))


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"layer": "last"}, "model.layer"), ({"layer": -1}, "model.layer"),
    ({"layer": True}, "model.layer"), ({"pooling": "attention"}, "model.pooling"),
    ({"proj_dim": 0}, "model.proj_dim"), ({"layer_norm": "yes"}, "model.layer_norm"),
    ({"dropout": 1.0}, "model.dropout"), ({"head_hidden": [0]}, "model.head_hidden"),
])
def test_bad_hyper_parameters_name_their_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        head(**kwargs)
    assert err.value.key == key


def test_a_layer_beyond_the_kept_hidden_states_says_so() -> None:
    x, lengths = batch(layers=3)
    with pytest.raises(ConfigError) as err:
        head(layer=3)(x, lengths)
    assert err.value.key == "model.layer" and "valid: 0..2" in err.value.message


@pytest.mark.slow  # one measuring subprocess per batch size (~25 s on 2 shared cores)
@pytest.mark.parametrize("pooling", ["mean", "attentive"])
def test_memory_estimate_equals_the_measured_cpu_step(pooling: str) -> None:
    cfg = {"name": "ssl_head", "proj_dim": 64, "head_hidden": [32], "pooling": pooling}
    shape = (60, 13, 96)  # (T, L, D): 1.2 s of a 13-state, 96-wide encoder
    est = estimate_step_memory(cfg, n_features=96, n_classes=4, input_shape=shape)
    spec = {"model_cfg": cfg, "n_features": 96, "n_classes": 4, "input_shape": list(shape)}
    for b, real in zip((2, 5), measure_step_peaks(spec, [2, 5])):
        assert abs(est.peak(b) - real) <= 0.02 * real, (b, est.peak(b), real)


def test_trains_on_tiny_encoder_features_through_the_trainer(tmp_path: Path) -> None:
    data = prepare_data(with_defaults({
        "corpus": "synthetic", "synthetic_utterances": 40, "max_seconds": 1.5,
        "features": "ssl", "normalize": "none", "use_folds": 1, "cache_dir": str(tmp_path),
        "ssl": {"model": "hubert_base", "checkpoint": "random", "arch": "tiny"}}, DATA_DEFAULTS))
    train = with_defaults({"epochs": 3, "batch_size": 8, "lr": 3e-3, "schedule": "constant",
                           "amp": "off", "device": "cpu", "seeds": [0]}, TRAIN_DEFAULTS)
    config = {"data": {}, "model": {"name": "ssl_head", **SMALL, "pooling": "attentive"},
              "train": train, "runtime": {"metric": "val_uar", "mode": "max"}}
    trainer = LockstepTrainer(config, data, torch.device("cpu"))
    reports = [trainer.run_epoch() for _ in range(3)]
    assert reports[-1]["train_loss_mean"] < reports[0]["train_loss_mean"]
    assert trainer.finished and math.isfinite(reports[-1][names.OBJECTIVE])
    result = json.loads(reports[-1][names.MEMBER_RESULTS_JSON])[0]
    assert result["n_test"] == sum(map(sum, result["test_confusion"])) > 0
    # the trainer's checkpoint restores the head, learnt layer weights included
    state = trainer.state_dict()
    again = LockstepTrainer(config, data, torch.device("cpu"))
    again.load_state_dict(state)
    model, restored = trainer.members[0].model, again.members[0].model
    assert torch.equal(model.layer_logits, restored.layer_logits)
    assert not torch.equal(model.layer_weights(3), torch.full((3,), 1 / 3))
