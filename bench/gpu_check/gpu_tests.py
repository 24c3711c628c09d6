"""The last part: the gpu-marked tests (pytest -m gpu), which ran and which passed."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from bench.gpu_check.common import (
    ROOT,
    PartResult,
    Run,
)


def gpu_tests(run: Run) -> PartResult:
    result = PartResult("tests", "The gpu-marked tests (pytest -m gpu)", "all pass on CUDA")
    if run.dry_run or not run.cuda:
        result.status = "not run"
        result.notes.append("skipped in dry-run: needs CUDA" if run.dry_run
                            else "not run: needs CUDA")
        return result
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")
                   if "mark.gpu" in p.read_text())
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rA", "-p", "no:cacheprovider",
         "--continue-on-collection-errors", *files],
        capture_output=True, text=True, cwd=str(ROOT), timeout=600,
    )
    rows = [{"test": line.split(" ", 1)[1].split(" - ")[0], "outcome": line.split(" ", 1)[0]}
            for line in proc.stdout.splitlines()
            if line.split(" ", 1)[0] in ("PASSED", "FAILED", "ERROR", "SKIPPED")]
    result.table = pd.DataFrame(rows, columns=["test", "outcome"])
    result.notes.append(f"pytest exit {proc.returncode}: {proc.stdout.strip().splitlines()[-1:]}")
    result.checks["gpu tests pass"] = proc.returncode == 0
    return result
