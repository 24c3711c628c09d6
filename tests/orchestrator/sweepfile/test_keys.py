"""Every key of data, train, search and resources is declared once (trainables/config.py: Key):
a malformed value of each declared key is refused at file:line:section.key; numbers are finite
and of sane size everywhere; seeds are distinct; design.md's key table is the declarations'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.sweepfile import SpecError, load_spec
from tests.orchestrator.sweepfile.test_spec import SWEEP, write
from tests.orchestrator.sweepfile.test_spec import toy as toy  # autouse: registers "toy"
from trainables.config import MAX_INT, SECTIONS, Key, key_table
from trainables.data import CORPORA
from trainables.data.synthetic import SyntheticCorpus

ROOT = Path(__file__).resolve().parents[3]


def _declared() -> list[tuple[str, str, Key]]:
    return [(section, name, key) for section, keys in SECTIONS.items()
            for name, key in keys.items()]


def _wrong_type(key: Key) -> Any:
    """A value no declaration of this key accepts."""
    types = key.types or (type(key.default),)
    if key.choices is None and key.registry is None and str not in types:
        return "ten"
    return [1]


def _with(section: str, name: str, value: Any) -> str:
    """SWEEP with `section.name: value` written in block style (one key per line)."""
    spec = yaml.safe_load(SWEEP)
    where = spec
    for part in section.split("."):
        where = where.setdefault(part, {})
        if not isinstance(where, dict):  # search.scheduler given as a word: make it a mapping
            raise AssertionError(section)
    where[name] = value
    return yaml.safe_dump(spec, default_flow_style=False, sort_keys=False)


def _refused(tmp_path: Path, section: str, name: str, value: Any) -> SpecError:
    path = write(tmp_path, _with(section, name, value))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    err = info.value
    assert err.key is not None and err.key.startswith(f"{section}.{name}"), str(err)
    assert err.line is not None and f"{name}:" in path.read_text().splitlines()[err.line - 1]
    assert str(err).startswith(f"{path}:{err.line}: {err.key}: ") and "\n" not in str(err)
    return err


@pytest.mark.parametrize(("section", "name", "key"), _declared(),
                         ids=[f"{s}.{n}" for s, n, _ in _declared()])
def test_every_declared_key_refuses_a_malformed_value_at_its_line(
        tmp_path: Path, section: str, name: str, key: Key) -> None:
    _refused(tmp_path, section, name, _wrong_type(key))


def _past_bound(key: Key) -> Any:
    op, bound = key.bounds()[0]
    types = key.types or (type(key.default),)
    step = 1 if int in types and float not in types else 0.5
    return {">=": bound - step, ">": bound, "<=": bound + step, "<": bound}[op]


BOUNDED = [(s, n, k) for s, n, k in _declared() if k.bounds()]


@pytest.mark.parametrize(("section", "name", "key"), BOUNDED,
                         ids=[f"{s}.{n}" for s, n, _ in BOUNDED])
def test_every_declared_bound_is_enforced(tmp_path: Path, section: str, name: str,
                                          key: Key) -> None:
    err = _refused(tmp_path, section, name, _past_bound(key))
    assert "must hold" in err.message


NUMERIC = [(s, n, k) for s, n, k in _declared()
           if isinstance(k.default, int | float) and not isinstance(k.default, bool)
           or (k.types and set(k.types) & {int, float})]


@pytest.mark.parametrize(("section", "name", "key"), NUMERIC,
                         ids=[f"{s}.{n}" for s, n, _ in NUMERIC])
def test_nan_inf_and_huge_numbers_are_refused(tmp_path: Path, section: str, name: str,
                                              key: Key) -> None:
    accepts_float = float in (key.types or (type(key.default),))
    bad = [float("nan"), float("inf"), -float("inf")] if accepts_float else [2**63, -(2**63)]
    for value in bad:
        err = _refused(tmp_path, section, name, value)
        assert "finite" in err.message or f"at most {MAX_INT}" in err.message, err.message


@pytest.mark.parametrize(("param", "fragment"), [
    ("train.lr: {choice: [.nan, 0.1]}", "finite"),
    ("train.lr: {uniform: [.nan, 0.1]}", "finite"),
    ("model.layers: {int: [1, 70000000000000000000]}", "in size"),
    ("model.layers: {choice: [2, 70000000000000000000]}", "in size"),
    ("model.dropout: {choice: [.inf]}", "finite"),
    ("train.seeds: {choice: [[0, 1], [3, 3]]}", "seeds must be distinct"),
])
def test_searched_values_are_finite_sized_and_distinct(tmp_path: Path, param: str,
                                                       fragment: str) -> None:
    text = SWEEP.replace("    train.lr: {loguniform: [1.0e-5, 1.0e-3]}\n", "")
    text = text.replace("    model.layers: {int: [1, 4]}\n", "")
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, text + f"    {param}\n"))
    assert info.value.key.startswith(f"search.params.{param.split(':')[0]}")
    assert fragment in info.value.message, info.value.message


def test_model_values_are_finite(tmp_path: Path) -> None:
    text = SWEEP.replace("model: {name: toy, layers: 3}", "model: {name: toy, dropout: .nan}")
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, text))
    assert info.value.key == "model.dropout" and "finite" in info.value.message


def test_duplicate_seeds_are_refused(tmp_path: Path) -> None:
    err = _refused(tmp_path, "train", "seeds", [0, 1, 0])
    assert "seeds must be distinct" in err.message and "[0]" in err.message
    assert load_spec(write(tmp_path, _with("train", "seeds", [0, 1]))).train["seeds"] == (0, 1)


def test_the_defaults_are_accepted_as_written(tmp_path: Path) -> None:
    """Each declaration's default passes its own validation when written out explicitly."""
    spec = yaml.safe_load(SWEEP)
    for section, name, key in _declared():
        if key.default is None:
            continue
        if "." in section:  # a sub-section (search.scheduler, search.confirm, ...): a mapping
            parent, child = section.split(".")
            if not isinstance(spec[parent].get(child), dict):
                spec[parent][child] = {}
            spec[parent][child].setdefault(name, key.default)
        else:
            spec.setdefault(section, {}).setdefault(name, key.default)
    spec["search"].pop("mode", None)
    loaded = load_spec(write(tmp_path, yaml.safe_dump(spec)))
    assert loaded.search.tuner_trials == SECTIONS["search"]["tuner_trials"].default


def test_a_corpus_that_needs_a_root_says_so_on_its_class(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A new corpus is its class plus one registry entry: the sweep file then asks for its
    root without any table in orchestrator/ naming it."""

    class Rooted(SyntheticCorpus):
        name = "rooted"
        needs_root = True

    monkeypatch.setitem(CORPORA, "rooted", Rooted)
    text = SWEEP.replace("corpus: synthetic", "corpus: rooted")
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, text))
    assert info.value.key == "data.root" and "corpus rooted needs data.root" in str(info.value)


def test_the_design_doc_key_table_is_the_declarations() -> None:
    design = (ROOT / "docs" / "design.md").read_text()
    assert key_table() in design, "regenerate it: python -c 'from trainables.config import " \
                                  "key_table; print(key_table())'"


TRANSFORMER = """\
name: limits
data: {corpus: synthetic, features: logmel, n_mels: 16}
model: {name: transformer, layers: 1, d_model: 32, heads: 2, ff_dim: 32}
search:
  params:
"""


@pytest.mark.parametrize(("param", "fragment"), [
    ("model.dropout: {uniform: [0.9, 1.5]}", "can draw 1.4"),
    ("model.dropout: {choice: [0.1, 1.0]}", "can draw 1.0"),
    ("model.layers: {int: [1, 1000000]}", "layers must be an integer <= 128"),
    ("model.d_model: {choice: [32, 1000000000]}", "d_model must be an integer <= 65536"),
    ("model.pooling: {choice: [mean, maxx]}", "pooling must be one of"),
])
def test_searched_model_values_are_checked_against_the_family_limits(
        tmp_path: Path, param: str, fragment: str) -> None:
    """The family's own constructor checks (its declared limits) see each drawable end."""
    with pytest.raises(SpecError) as info:
        load_spec(write(tmp_path, TRANSFORMER + f"    {param}\n"))
    assert info.value.key == f"search.params.{param.split(':')[0]}", str(info.value)
    assert fragment in info.value.message and "transformer" in info.value.message


def test_a_range_up_to_an_open_limit_is_accepted(tmp_path: Path) -> None:
    """dropout is in [0, 1): a uniform [0, 1] range never draws 1 itself."""
    spec = load_spec(write(tmp_path, TRANSFORMER + "    model.dropout: {uniform: [0.0, 1.0]}\n"
                                                   "    model.layers: {int: [1, 4]}\n"))
    assert [p.key for p in spec.search.params] == ["model.dropout", "model.layers"]
