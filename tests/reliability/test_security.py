"""Security of what sersweep reads and opens: sweep files are parsed with yaml.SafeLoader only
(a Python-object tag is refused and nothing runs), nothing in a result store is ever unpickled by
the query / report code, `--sql` is read-only, and a local sweep's Ray dashboard listens on
loopback only."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator import query
from orchestrator.cli import main
from orchestrator.store import ResultStore
from tests.reliability.drivers import (
    REPO,
    Driver,
    cmdline,
    describe,
    driver_env,
    session_pids,
    skip_if_a_cluster_would_be_joined,
    tiny_args,
    tree_pids,
    wait_for,
)

PAYLOAD_TAGS = [
    "!!python/object/apply:os.system [\"touch {marker}\"]",
    "!!python/object/new:os.system [\"touch {marker}\"]",
    "!!python/object/apply:subprocess.check_call [[touch, {marker}]]",
]


@pytest.mark.parametrize("where", ["top", "value"])
@pytest.mark.parametrize("tag", PAYLOAD_TAGS)
def test_a_python_object_tag_is_refused_and_nothing_runs(
    tag: str, where: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "pwned"
    payload = tag.format(marker=marker)
    body = (REPO / "tests" / "reliability" / "tiny.yaml").read_text()
    text = f"{payload}\n" if where == "top" else body.replace("name: tiny_rel",
                                                              f"name: {payload}")
    path = tmp_path / "evil.yaml"
    path.write_text(text)
    results = tmp_path / "results"
    rc = main([str(path), "--results", str(results)])
    err = capsys.readouterr().err
    assert rc == 2 and str(path) in err and "is not allowed" in err, err
    assert not marker.exists(), "the YAML payload ran"
    assert not results.exists()


def test_only_safe_yaml_loaders_appear_in_the_sources() -> None:
    unsafe = re.compile(r"yaml\.(load|load_all|unsafe_load|full_load)\(|yaml\.(Unsafe|Full)?"
                        r"Loader\b|CLoader")
    hits = [f"{p}:{n}" for p in _sources("orchestrator", "trainables", "sweep.py")
            for n, line in enumerate(p.read_text().splitlines(), 1) if unsafe.search(line)]
    assert hits == []


def _sources(*names: str) -> list[Path]:
    out = []
    for name in names:
        path = REPO / name
        out += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return out


def test_the_store_readers_never_import_an_unpickler() -> None:
    files = _sources(*[f"orchestrator/{n}" for n in os.listdir(REPO / "orchestrator")
                       if n.startswith(("query", "report", "store", "compaction", "schema"))])
    assert len(files) >= 8
    banned = re.compile(r"\b(pickle|cloudpickle|dill|joblib|torch\.load|read_pickle|"
                        r"marshal|shelve)\b")
    hits = [f"{p.name}:{n}: {line.strip()}" for p in files
            for n, line in enumerate(p.read_text().splitlines(), 1)
            if banned.search(line) and not line.lstrip().startswith("#")
            and "Nothing is ever unpickled" not in line]
    assert hits == []


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _store(root: Path) -> ResultStore:
    store = ResultStore(str(root), "victim")
    for n in range(2):
        store.write_trial(
            {"trial_id": f"t{n}", "status": "completed", "objective": 0.3 + n / 10,
             "epochs_run": 1, "members": 1, "metric": "val_uar", "mode": "max"},
            [{"member": 0, "epoch": 1, "val_uar": 0.3, "val_loss": 1.0}],
            [{"member": 0, "best_epoch": 1}],
        )
    return store


def test_pickles_planted_in_a_store_are_never_unpickled(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Payload(marker))
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control)))  # the payload is live when unpickled ...
    assert control.exists()
    root = tmp_path / "results"
    _store(root)
    sweep = root / "victim"
    for rel in ("trials/evil.pkl", "trials/t9.parquet", "epochs/t9.parquet",
                "members/compact-00000000000000000001.parquet", "trials/evil.pickle",
                "_tune/tuner.pkl", "spec.pkl"):
        (sweep / rel).parent.mkdir(parents=True, exist_ok=True)
        (sweep / rel).write_bytes(evil)
    results = query.load(str(root))
    assert sorted(results.trials["trial_id"]) == ["t0", "t1"]  # t9 skipped: not Parquet
    assert len(results.epochs) == 2 and len(results.members) == 2
    query.leaderboard(results)
    query.curves(results, ["t0"])
    with pytest.raises(query.QueryError, match="t9"):  # t9's planted file is no trial
        query.curves(results, ["t0", "t9"])
    assert len(query.sql(str(root), "SELECT * FROM trials")) == 2
    assert main(["results", str(root)]) == 0
    assert main(["results", str(sweep), "--sql", "SELECT count(*) FROM epochs"]) == 0
    assert main(["results", str(sweep), "--curves", "t0"]) == 0
    assert main(["results", str(sweep), "--curves", "t0,t9"]) == 2  # unknown id: named, exit 2
    assert main(["report", str(sweep), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "report.html").is_file()
    capsys.readouterr()
    assert not marker.exists(), "a planted pickle was executed"  # ... and never unpickled


WRITES = [
    "CREATE TABLE stolen AS SELECT * FROM trials",
    "COPY trials TO '{out}'",
    "COPY (SELECT * FROM trials) TO '{out}' (FORMAT csv)",
    "INSERT INTO trials SELECT * FROM trials",
    "DROP VIEW trials",
    "ATTACH '{out}' AS other",
    "SELECT 1; COPY trials TO '{out}'",
    "EXPORT DATABASE '{dir}'",
    "INSTALL httpfs",
    "PRAGMA enable_profiling",
    "SET threads = 1",
]


def _bytes(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("statement", WRITES)
def test_sql_is_read_only(statement: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "results"
    _store(root)
    before = _bytes(root)
    out = tmp_path / "x.csv"
    query_text = statement.format(out=out, dir=tmp_path / "exported")
    rc = main(["results", str(root), "--sql", query_text])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "Traceback" not in err, err
    assert not out.exists() and not (tmp_path / "exported").exists()
    assert _bytes(root) == before


def test_sql_write_through_sweep_py_exits_2(tmp_path: Path) -> None:
    root = tmp_path / "results"
    _store(root)
    out = tmp_path / "x.csv"
    proc = subprocess.run(
        [sys.executable, "sweep.py", "results", str(root), "--sql", f"COPY trials TO '{out}'"],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=driver_env())
    assert proc.returncode == 2 and "read-only" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def _listeners() -> list[tuple[str, int, int]]:
    """(local address, port, pid) of every listening TCP socket (`ss -ltnp`)."""
    text = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, timeout=30).stdout
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        address, _, port = fields[3].rpartition(":")
        for pid in re.findall(r"pid=(\d+)", line):
            out.append((address.strip("[]"), int(port), int(pid)))
    return out


LOOPBACK = ("127.0.0.1", "::1", "localhost")


@pytest.mark.slow
def test_a_local_sweeps_dashboard_listens_on_loopback_only(
    tmp_path: Path, data_cache: Path
) -> None:
    if subprocess.run(["which", "ss"], capture_output=True).returncode:
        pytest.skip("needs ss (iproute2)")
    skip_if_a_cluster_would_be_joined()
    results = tmp_path / "results"
    driver = Driver(tiny_args(results, data_cache, "--trials", "2", "--epochs", "4"),
                    tmp_path / "driver.log")
    try:
        started = wait_for(lambda: any((results / "tiny_rel").glob("_tune/run-*/*/")), 240)
        assert started and driver.running(), driver.output()[-3000:]
        time.sleep(1.0)  # Ray's agents bind within a second of the raylet
        mine = set(session_pids(driver.sid)) | set(tree_pids(driver.proc.pid))
        sockets = [s for s in _listeners() if s[2] in mine]
        assert sockets, "found no listening socket of this sweep's Ray (is ss showing pids?)"
        dashboards = {p for p in mine  # the dashboard head and its per-node agent
                      if "ray/dashboard/dashboard.py" in cmdline(p)
                      or cmdline(p).startswith("ray::DashboardAgent")}
        exposed = [s for s in sockets if s[0] not in LOOPBACK]
        print("non-loopback listeners of the sweep's Ray:",
              [(a, port, cmdline(pid)[:40]) for a, port, pid in exposed])
        heads = {p for p in dashboards if "ray/dashboard/dashboard.py" in cmdline(p)}
        assert heads, describe(sorted(dashboards))
        # the dashboard itself (the HTTP UI and API) is told loopback and listens only there
        assert [s for s in exposed if s[1] == 8265 or s[2] in heads] == [], describe(sorted(heads))
        for pid in heads:
            assert "--host=127.0.0.1" in cmdline(pid), cmdline(pid)
        # Ray's per-node agent (job agent, metrics; with ray[default]) and its gRPC servers bind
        # the node's address like every other Ray port: they are only acceptable behind Ray's
        # token authentication, which a private local Ray turns on with ~/.ray/auth_token
        if [s for s in exposed if s[2] in dashboards - heads]:
            assert (Path.home() / ".ray" / "auth_token").is_file()
            assert os.environ.get("RAY_AUTH_MODE", "token") == "token"
        assert driver.wait(timeout=300) == 0, driver.output()[-3000:]
    finally:
        driver.cleanup()
