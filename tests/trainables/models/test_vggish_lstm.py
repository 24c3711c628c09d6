"""VGGish + LSTM: local pretrained weights (never downloaded) and the 96-frame patching."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trainables.errors import ConfigError, DataError
from trainables.models import build_model
from trainables.models.vggish_lstm import vggish_features


def test_weights_load_from_a_local_torchvggish_style_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = vggish_features(1.0)
    path = tmp_path / "vggish.pt"
    torch.save({f"features.{k}": v for k, v in source.state_dict().items()}, path)
    torch.manual_seed(2)
    model = build_model({"name": "vggish_lstm", "weights": str(path), "freeze_cnn": True},
                        n_features=64, n_classes=4)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.cnn.state_dict()[key], value)
    assert not any(p.requires_grad for p in model.cnn.parameters())
    assert all(p.requires_grad for p in model.lstm.parameters())


def test_missing_weights_file_is_a_data_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "vggish.pt"
    with pytest.raises(DataError) as err:
        build_model({"name": "vggish_lstm", "weights": str(missing)}, n_features=64, n_classes=4)
    assert err.value.path == str(missing) and "not found" in str(err.value)


def test_weights_of_another_shape_are_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "small.pt"
    torch.save(vggish_features(0.5).state_dict(), path)
    with pytest.raises(DataError, match="width"):
        build_model({"name": "vggish_lstm", "weights": str(path)}, n_features=64, n_classes=4)


def test_weights_need_full_width(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        build_model({"name": "vggish_lstm", "width": 0.5, "weights": str(tmp_path / "w.pt")},
                    n_features=64, n_classes=4)
    assert err.value.key == "model.width"


@pytest.mark.parametrize(("frames", "patches"), [(96, 1), (97, 2), (400, 5)])
def test_one_lstm_step_per_96_frame_patch(frames, patches) -> None:
    model = build_model({"name": "vggish_lstm", "width": 1 / 16, "embedding": 8, "lstm_hidden": 4},
                        n_features=64, n_classes=4).eval()
    seen = []
    model.lstm.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape))
    model(torch.randn(2, frames, 64), torch.tensor([frames, frames]))
    assert seen == [(2, patches, 8)]
