"""The held-out-style table of bad inputs (issue 23): every case goes through the command line
(`orchestrator.cli.main`, in process) and must end with its exit code, ONE message line holding
its fragment, no traceback, and the result store it points at byte-for-byte unchanged (sha256 of
every file and folder name under the results root, recorded before the case runs).

The store is recorded once per module (`recorded`): a sweep folder `tiny_rel` (tests/reliability/
tiny.yaml's name) with its spec.yaml and three trials written through the store's own writer, so
the sweep-file, manifest and query cases all aim at a results root that holds a real sweep. A
case that must break the store itself (spec.yaml edited by hand, driver.lock a file) works on its
own copy and checks that copy. CASES is also what bench/faults.py runs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from orchestrator.cli import main
from orchestrator.store import ResultStore, write_spec
from orchestrator.sweepfile import load_spec
from tests.reliability.drivers import TINY
from tests.reliability.test_bad_inputs_cli import BAD_MANIFEST_DATA, MANIFEST_MESSAGES, _sweep_for
from tests.reliability.test_bad_spec_files import BAD, GENERATED, ROWS
from tests.trainables.data.fixtures import make_manifest

SWEEP = "tiny_rel"


def store_digest(root: Path) -> str:
    """sha256 over every folder and file (relative name and bytes) under `root`."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def record_store(root: Path, trials: int = 3) -> Path:
    """A results root holding sweep `tiny_rel`: spec.yaml and `trials` recorded trials."""
    spec = load_spec(TINY)
    store = ResultStore(str(root), spec.name)
    for i in range(trials):
        uars = [0.4 + 0.05 * i, 0.42 + 0.05 * i]
        row = {"trial_id": f"t{i}", "status": "completed", "objective": float(np.mean(uars)),
               "metric": "val_uar", "mode": "max", "epochs_run": 3, "members": 2,
               "members_collapsed": 0, "param.train.lr": 1e-3 * (i + 1),
               "param.model.pooling": ("max", "mean")[i % 2]}
        for split in ("val", "test"):
            row[f"{split}_uar_mean"], row[f"{split}_uar_std"] = np.mean(uars), np.std(uars)
        epochs = [{"member": m, "fold": f"s{m}", "seed": 0, "epoch": e, "val_uar": uars[m] * e / 3,
                   "val_loss": 1.0 / e, "train_loss": 1.2 / e} for m in (0, 1) for e in (1, 2, 3)]
        members = [{"member": m, "fold": f"s{m}", "seed": 0, "best_epoch": 3, "val_uar": uars[m],
                    "test_uar": uars[m] - 0.03, "test_confusion": json.dumps([[5, 1], [2, 4]]),
                    "n_test": 12, "collapsed": False} for m in range(2)]
        store.write_trial(row, epochs, members)
    write_spec(store.sweep_dir, spec.as_dict())
    return root


@dataclass(frozen=True)
class Case:
    """argv(ctx) -> the command line; the case's expected exit code and message fragment."""

    name: str
    argv: Callable[[Ctx], list[str]]
    fragment: str
    code: int = 2
    marks: tuple = field(default=())


@dataclass
class Ctx:
    """Where a case runs: `root` the recorded store (or the case's copy), `tmp` its scratch."""

    root: Path
    tmp: Path

    @property
    def sweep(self) -> str:
        return str(self.root / SWEEP)

    def own_copy(self) -> Path:
        """Switch this case to its own copy of the store (the case breaks the store itself)."""
        copy = self.tmp / "copy"
        shutil.copytree(self.root, copy)
        self.root = copy
        return copy / SWEEP


def _file(name: str) -> Callable[[Ctx], list[str]]:
    def argv(ctx: Ctx) -> list[str]:
        path = BAD / name
        if name in GENERATED:
            path = ctx.tmp / name
            path.write_bytes(GENERATED[name])
        return [str(path), "--results", str(ctx.root)]
    return argv


def _tiny(*extra: str) -> Callable[[Ctx], list[str]]:
    return lambda ctx: [str(TINY), "--results", str(ctx.root), *extra]


def _manifest(case: str) -> Callable[[Ctx], list[str]]:
    def argv(ctx: Ctx) -> list[str]:
        manifest, rows = make_manifest(ctx.tmp / "corpus", n=12)
        BAD_MANIFEST_DATA[case](manifest.parent, pd.DataFrame(rows))
        return [str(_sweep_for(ctx.tmp, "manifest", manifest)), "--results", str(ctx.root)]
    return argv


def _results(*extra: str) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ["results", ctx.sweep, *extra]


def _root_is_a_file(ctx: Ctx) -> list[str]:
    (ctx.tmp / "afile").write_text("not a folder\n")
    return [str(TINY), "--results", str(ctx.tmp / "afile")]


def _lock_is_a_file(ctx: Ctx) -> list[str]:
    sweep = ctx.own_copy()
    shutil.rmtree(sweep / "driver.lock", ignore_errors=True)
    (sweep / "driver.lock").write_text("12345\n")
    return [str(TINY), "--results", str(ctx.root)]


def _spec_yaml(text: str) -> Callable[[Ctx], list[str]]:
    def argv(ctx: Ctx) -> list[str]:
        (ctx.own_copy() / "spec.yaml").write_text(text)
        return [str(TINY), "--results", str(ctx.root)]
    return argv


def _spec_row(name: str) -> Case:
    return Case(f"file:{name}", _file(name), ROWS[name][1])


_SPEC_FILES = ["alias_bomb.yaml", "deep_nesting.yaml", "too_large.yaml",
               "condition_value_never_drawn.yaml", "condition_value_never_fixed.yaml",
               "condition_value_out_of_range.yaml", "condition_on_continuous.yaml",
               "syntax_error.yaml", "python_tag.yaml", "duplicate_keys.yaml", "tabs.yaml",
               "unknown_top_key.yaml", "two_documents.yaml", "binary.yaml", "not_utf8.yaml",
               "empty.yaml"]
_MANIFESTS = ["manifest_empty", "manifest_header_only", "manifest_wav_under_two_speakers",
              "manifest_wav_under_two_sessions", "manifest_duplicated_row",
              "manifest_labels_differ_by_case", "corrupt_wav", "manifest_missing_columns"]
_OFF = "file system operations are disabled"
_S3 = pytest.mark.slow  # the object store client retries for ~20 s before it gives up

CASES: list[Case] = [
    *[_spec_row(name) for name in _SPEC_FILES],
    Case("set:when_never", _tiny("--set", "search.params.model.heads={choice: [2], when: "
                                 "{model.pooling: [maxx]}}"), "model.pooling can never be 'maxx'"),
    Case("set:alias_bomb_value", _tiny("--set", "train.lr=[&a [1,1,1,1,1,1,1,1,1,1], [*a,*a,*a,"
                                       "*a,*a,*a,*a,*a,*a,*a]]"), "train.lr"),
    Case("set:no_equals", _tiny("--set", "train.lr"), "--set takes key=value"),
    *[Case(f"manifest:{name}", _manifest(name), MANIFEST_MESSAGES[name])
      for name in _MANIFESTS],
    Case("where:union_injection", _results("--where", "1=1) UNION ALL SELECT 99999 --"),
         "--where takes one SQL condition"),
    Case("where:comment", _results("--where", "val_uar > 0 -- and more"), "'--' is not allowed"),
    Case("where:unbalanced", _results("--where", "(val_uar > 0"), "never closed"),
    Case("where:statement", _results("--where", "1=1); DROP TABLE trials; SELECT (1"),
         "';' is not allowed"),
    Case("where:unknown_column", _results("--where", "val_uarr > 0.5"), "val_uar"),
    Case("sql:read_file", _results("--sql", "SELECT * FROM read_csv('/etc/passwd')"), _OFF),
    Case("sql:glob", _results("--sql", "SELECT * FROM glob('/*')"), _OFF),
    Case("sql:http", _results("--sql", "SELECT * FROM read_parquet('https://example.com/x.parquet')"),
         _OFF),
    Case("sql:parquet_by_path", lambda ctx: ["results", ctx.sweep, "--sql",
                                             f"SELECT * FROM '{ctx.sweep}/trials/t0.parquet'"],
         "bad query"),
    Case("sql:set_access", _results("--sql", "SELECT 1; SET enable_external_access = true"),
         "exactly one SELECT"),
    Case("sql:install", _results("--sql", "INSTALL httpfs"), "only read-only SELECT"),
    Case("sql:attach", _results("--sql", "ATTACH '/tmp/sersweep-attack.db'"),
         "only read-only SELECT"),
    Case("sql:copy", _results("--sql", "COPY trials TO '/tmp/sersweep-leak.csv'"),
         "only read-only SELECT"),
    Case("sql:drop", _results("--sql", "DROP VIEW trials"), "only read-only SELECT"),
    Case("fault:results_root_is_a_file", _root_is_a_file, "a file is in the way"),
    Case("fault:driver_lock_is_a_file", _lock_is_a_file, "driver.lock"),
    Case("fault:spec_yaml_not_yaml", _spec_yaml("name: tiny_rel\ntrain: {epochs: [3\n"),
         "the recorded sweep cannot be read (YAML syntax error"),
    Case("fault:spec_yaml_a_list", _spec_yaml("- name\n- tiny_rel\n"),
         "the recorded sweep is not a mapping"),
    Case("fault:unreachable_object_store",
         lambda ctx: [str(TINY), "--results", "s3://sersweep-nowhere/results"],
         "cannot hold the sweep", marks=(_S3,)),
]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = record_store(tmp_path_factory.mktemp("recorded") / "results")
    return root, store_digest(root)


def test_the_table_is_large_and_names_are_unique() -> None:
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=c.marks) for c in CASES])
def test_bad_input_ends_in_one_line_and_leaves_the_store_unchanged(
    case: Case, recorded: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # an S3 endpoint that refuses connections at once (no network needed, no credentials used)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "none")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "none")
    root, digest = recorded
    ctx = Ctx(root, tmp_path)
    argv = case.argv(ctx)
    before = store_digest(ctx.root)
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == case.code, err
    assert err.startswith("error: ") and err.strip().count("\n") == 0, err
    assert "Traceback" not in err
    assert case.fragment in err, err
    assert store_digest(ctx.root) == before
    assert store_digest(root) == digest  # the shared store, whatever the case aimed at
