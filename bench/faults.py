"""Faults and bad inputs against a recorded store: what each one costs the store.

Records a results root holding sweep `tiny_rel` (three trials, spec.yaml: the store's own
writer), then runs every case of tests/reliability/test_bad_input_table.py: CASES through the
command line (orchestrator.cli.main, in process) and prints, per case, its exit code, whether it
ended in one message line, and whether the store's sha256 stayed the same; then the totals:
faults tried, cases that ended as the README says (exit code + one line), rows lost and rows
duplicated (trial / epoch / member rows of the store, read back through the product's reader,
against the rows recorded before the first case).

Readers: `--store DIR` names a results root (or sweep folder) to read with each reader of
READERS (pandas, pyarrow read_table, pyarrow dataset, polars, DuckDB; each without options), and
prints how many read every table. The adversarial store (int/float choices, mixed choices, lists,
conditionals, failed and does_not_fit trials, a resume: issue 23.2) is built by the store's own
bench/test; point --store at it. Without --store the recorded store above is read.

    python bench/faults.py [--slow] [--store DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TABLES = ("trials", "epochs", "members")


def _read_pandas(folder: Path) -> int:
    import pandas as pd

    return len(pd.read_parquet(folder))


def _read_pyarrow_table(folder: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_table(folder).num_rows


def _read_pyarrow_dataset(folder: Path) -> int:
    import pyarrow.dataset as ds

    return ds.dataset(folder, format="parquet").to_table().num_rows


def _read_polars(folder: Path) -> int:
    import polars as pl

    return pl.scan_parquet(f"{folder}/*.parquet").collect().height


def _read_duckdb(folder: Path) -> int:
    import duckdb

    with duckdb.connect() as con:
        query = f"SELECT count(*) FROM read_parquet('{folder}/*.parquet')"
        return con.execute(query).fetchone()[0]


# name -> reads one table folder of a sweep, returns its row count (raises when it cannot)
READERS: dict[str, Callable[[Path], int]] = {
    "pandas.read_parquet": _read_pandas,
    "pyarrow.parquet.read_table": _read_pyarrow_table,
    "pyarrow.dataset": _read_pyarrow_dataset,
    "polars.scan_parquet": _read_polars,
    "duckdb.read_parquet": _read_duckdb,
}


def sweep_folders(store: Path) -> list[Path]:
    """The sweep folders of a results root, or [store] when it is one sweep."""
    if (store / "trials").is_dir():
        return [store]
    return sorted(p for p in store.iterdir() if (p / "trials").is_dir())


def readers_that_read(store: Path) -> dict[str, str]:
    """reader -> "ok" or the first line of what it raised, over every table of every sweep."""
    out = {}
    for name, read in READERS.items():
        try:
            for sweep in sweep_folders(store):
                for table in TABLES:
                    if any((sweep / table).glob("*.parquet")):
                        read(sweep / table)
            out[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - a reader's failure is the measurement
            out[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
    return out


def _rows(root: Path) -> dict[str, list[tuple]]:
    from orchestrator import query

    results = query.load(str(root))
    keys = {"trials": ["trial_id"], "epochs": ["trial_id", "member", "epoch"],
            "members": ["trial_id", "member"]}
    return {t: [tuple(r) for r in results.table(t)[keys[t]].itertuples(index=False)]
            for t in TABLES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", action="store_true", help="include the slow cases (s3://)")
    parser.add_argument("--store", type=Path, default=None, help="a store for the readers")
    args = parser.parse_args(argv)

    import os

    import pytest

    from orchestrator.cli import main as cli_main
    from tests.reliability.test_bad_input_table import CASES, Ctx, record_store, store_digest

    os.environ.update(AWS_ENDPOINT_URL="http://127.0.0.1:9", AWS_EC2_METADATA_DISABLED="true",
                      AWS_ACCESS_KEY_ID="none", AWS_SECRET_ACCESS_KEY="none")
    with tempfile.TemporaryDirectory(prefix="sersweep-faults-") as tmp:
        root = record_store(Path(tmp) / "results")
        digest, rows = store_digest(root), _rows(root)
        tried = as_promised = unchanged = 0
        print(f"{'case':<42} {'exit':>4} {'lines':>5} {'store':>9}")
        for i, case in enumerate(CASES):
            if pytest.mark.slow in case.marks and not args.slow:
                continue
            scratch = Path(tmp) / f"case{i}"
            scratch.mkdir()
            ctx = Ctx(root, scratch)
            argv_case = case.argv(ctx)
            before = store_digest(ctx.root)
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = cli_main(argv_case)
            lines = len(err.getvalue().strip().splitlines())
            same = store_digest(ctx.root) == before and store_digest(root) == digest
            tried += 1
            as_promised += code == case.code and lines == 1 and case.fragment in err.getvalue()
            unchanged += same
            print(f"{case.name:<42} {code:>4} {lines:>5} {'same' if same else 'CHANGED':>9}")
        after = _rows(root)
        lost = sum(len(set(rows[t]) - set(after[t])) for t in TABLES)
        duplicated = sum(len(after[t]) - len(set(after[t])) for t in TABLES)
        print(f"\nfaults tried: {tried}; ended as the README says (exit code, one line): "
              f"{as_promised}/{tried}; store unchanged: {unchanged}/{tried}")
        print(f"rows lost: {lost}; rows duplicated: {duplicated} "
              f"(of {sum(len(r) for r in rows.values())} recorded)")
        store = args.store or root
        read = readers_that_read(store)
        label = "the adversarial store" if args.store else "the recorded store (no --store)"
        ok = sum(v == "ok" for v in read.values())
        print(f"readers that read {label} {store}: {ok} of {len(read)}")
        for name, outcome in read.items():
            print(f"  {name:<28} {outcome}")
    return 0 if as_promised == tried == unchanged and not lost and not duplicated else 1


if __name__ == "__main__":
    sys.exit(main())
