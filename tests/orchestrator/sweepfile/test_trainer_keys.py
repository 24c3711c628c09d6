"""Issue 13 keys of the data/train/distill sections: data.val / val_fraction, the collapse rule,
reweight + rebalance refused together, explicit distill.mse_layers."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orchestrator.store import write_spec
from orchestrator.sweepfile import SpecError, load_spec
from tests.orchestrator.sweepfile.test_spec import SWEEP, write
from tests.orchestrator.sweepfile.test_spec import toy as toy  # autouse: registers "toy"


def _with(text: str, section: str, line: str) -> str:
    """SWEEP with `line` added to the flow mapping (data) or block mapping (train)."""
    if section == "data":
        return text.replace("n_mels: 16}", f"n_mels: 16, {line}}}")
    return text.replace("  epochs: 4\n", f"  epochs: 4\n  {line}\n")


def test_val_protocol_is_validated_and_stored_with_the_sweep(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, _with(SWEEP, "data", "val: train_fraction, "
                                                          "val_fraction: 0.3")))
    assert spec.data["val"] == "train_fraction" and spec.data["val_fraction"] == 0.3
    write_spec(str(tmp_path / "results"), spec.as_dict())
    stored = yaml.safe_load((tmp_path / "results" / "spec.yaml").read_text())
    assert stored["data"]["val"] == "train_fraction" and stored["data"]["val_fraction"] == 0.3
    default = load_spec(write(tmp_path, SWEEP, "plain.yaml"))
    assert default.data["val"] == "next_session"  # today's behaviour, written out explicitly


@pytest.mark.parametrize(("section", "line", "key", "fragment"), [
    ("data", "val: leave_one_out", "data.val", "next_session"),
    ("data", "val_fraction: 0", "data.val_fraction", "val_fraction > 0"),
    ("data", "val_fraction: 1.5", "data.val_fraction", "val_fraction <= 1"),
    ("train", "collapse_margin: -0.1", "train.collapse_margin", "collapse_margin >= 0"),
    ("train", "collapse_top_share: 1.2", "train.collapse_top_share", "collapse_top_share <= 1"),
])
def test_bad_values_name_the_key(tmp_path: Path, section: str, line: str, key: str,
                                 fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, _with(SWEEP, section, line)))
    assert info.value.key == key and fragment in str(info.value)


def test_reweight_and_rebalance_together_are_refused(tmp_path: Path) -> None:
    text = _with(_with(SWEEP, "train", "reweight: true"), "train", "rebalance: true")
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, text))
    message = str(info.value)
    assert "train.reweight" in message and "train.rebalance" in message
    for one in ("reweight", "rebalance"):  # either alone is fine
        assert load_spec(write(tmp_path, _with(SWEEP, "train", f"{one}: true"),
                               f"{one}.yaml")).train[one] is True


TEACHER = {"results": "results/transformer", "pick": "best"}


def _distill_sweep(tmp_path: Path, layers: str, name: str = "d.yaml") -> Path:
    return write(tmp_path, SWEEP + f"distill:\n  teacher: {TEACHER}\n  mse_layers: {layers}\n",
                 name)


def test_distill_mse_layers_takes_explicit_indices(tmp_path: Path) -> None:
    assert list(load_spec(_distill_sweep(tmp_path, "[0, 2]")).distill["mse_layers"]) == [0, 2]
    assert load_spec(_distill_sweep(tmp_path, "3", "n.yaml")).distill["mse_layers"] == 3
    for bad, fragment in (("[0, 0]", "distinct hidden indices"), ("[a]", "distinct hidden"),
                          ("5", "mse_layers <= 4")):
        with pytest.raises(SpecError) as info:
            load_spec(_distill_sweep(tmp_path, bad, "bad.yaml"))
        assert info.value.key == "distill.mse_layers" and fragment in str(info.value)
