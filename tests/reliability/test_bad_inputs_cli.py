"""Bad input through the command line: exit code 2, one clear message naming the file on stderr
(no traceback), nothing written to the results folder.

Bad sweep FILES: every file of bad_inputs/ (plus the generated binary / not-UTF-8 ones) through
`orchestrator.cli.main` in-process, and a handful through a real `python sweep.py` subprocess.
Bad DATA: a valid manifest / IEMOCAP sweep with one thing broken in the data it points at.
Files that are odd but fine (another sample rate, stereo) are accepted and must then work.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from orchestrator.cli import main
from orchestrator.sweepfile import load_spec
from tests.reliability.drivers import REPO, driver_env
from tests.reliability.test_bad_spec_files import BAD, GENERATED, ROWS
from tests.trainables.data.fixtures import make_iemocap_tree, make_manifest, write_wav
from trainables.data import prepare_data
from trainables.errors import DataError


def _spec_file(name: str, tmp_path: Path) -> Path:
    if name in GENERATED:
        path = tmp_path / name
        path.write_bytes(GENERATED[name])
        return path
    return BAD / name


def _nothing_written(results: Path) -> bool:
    return not results.exists() or not any(results.iterdir())


def _assert_refused(rc: int, err: str, named: str, results: Path) -> None:
    assert rc == 2, err
    assert err.startswith("error: ") and named in err, err
    assert "Traceback" not in err
    assert err.strip().count("\n") == 0, f"more than one message line:\n{err}"
    assert _nothing_written(results), sorted(results.rglob("*"))


@pytest.mark.parametrize("name", sorted(ROWS))
def test_bad_sweep_file_exits_2_in_process(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = _spec_file(name, tmp_path)
    results = tmp_path / "results"
    rc = main([str(path), "--results", str(results)])
    captured = capsys.readouterr()
    _assert_refused(rc, captured.err, str(path), results)
    assert ROWS[name][1] in captured.err


SUBPROCESS_FILES = ["syntax_error.yaml", "python_tag.yaml", "binary.yaml",
                    "missing_iemocap_root.yaml"]


def _sweep_py(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "sweep.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=driver_env())


@pytest.mark.parametrize("name", SUBPROCESS_FILES)
def test_bad_sweep_file_exits_2_through_sweep_py(name: str, tmp_path: Path) -> None:
    path = _spec_file(name, tmp_path)
    results = tmp_path / "results"
    proc = _sweep_py([str(path), "--results", str(results)])
    _assert_refused(proc.returncode, proc.stderr, str(path), results)
    assert ROWS[name][1] in proc.stderr
    assert proc.stdout == ""


# --- bad data ------------------------------------------------------------------------------

SWEEP = """\
name: data_check
data: {{corpus: {corpus}, root: '{root}', features: logmel, n_mels: 16, max_seconds: 1.0,
       cache_dir: '{cache}'}}
model: {{name: transformer, layers: 1, d_model: 16, heads: 2, ff_dim: 16, head_hidden: [16]}}
train: {{epochs: 1, batch_size: 4}}
search: {{metric: val_uar, mode: max, trials: 1,
          params: {{train.lr: {{loguniform: [1.0e-4, 1.0e-3]}}}}}}
resources: {{cpus_per_trial: 1, gpus_per_trial: 0}}
"""


def _sweep_for(tmp_path: Path, corpus: str, root: Path) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP.format(corpus=corpus, root=root, cache=tmp_path / "cache"))
    return path


def _manifest(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    path, rows = make_manifest(tmp_path / "corpus", n=12)
    return path, pd.DataFrame(rows)


def _corrupt_wav(root: Path, df: pd.DataFrame) -> Path:
    bad = root / df["path"][3]
    bad.write_bytes(b"RIFF....WAVEfmt not really audio")
    return bad


def _zero_length_wav(root: Path, df: pd.DataFrame) -> Path:
    bad = root / df["path"][4]
    sf.write(bad, np.zeros((0,), dtype=np.float32), 16_000, subtype="PCM_16")
    return bad


def _nan_samples(root: Path, df: pd.DataFrame) -> Path:
    bad = root / df["path"][5]
    wave = np.full(8000, 0.1, dtype=np.float32)
    wave[100] = np.nan
    sf.write(bad, wave, 16_000, subtype="FLOAT")
    return bad


def _missing_columns(root: Path, df: pd.DataFrame) -> Path:
    manifest = root / "manifest.csv"
    df.drop(columns=["speaker"]).to_csv(manifest, index=False)
    return manifest


def _missing_file(root: Path, df: pd.DataFrame) -> Path:
    (root / df["path"][6]).unlink()
    return root / df["path"][6]


def _empty_label(root: Path, df: pd.DataFrame) -> Path:
    manifest = root / "manifest.csv"
    df.assign(label=["" if i == 2 else v for i, v in enumerate(df["label"])]).to_csv(
        manifest, index=False)
    return manifest


def _not_a_manifest_type(root: Path, df: pd.DataFrame) -> Path:
    manifest = root / "manifest.csv"
    renamed = manifest.with_suffix(".txt")
    manifest.rename(renamed)
    return renamed


def _empty_manifest(root: Path, df: pd.DataFrame) -> Path:
    (root / "manifest.csv").write_bytes(b"")
    return root / "manifest.csv"


def _header_only(root: Path, df: pd.DataFrame) -> Path:
    df.iloc[:0].to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def _wav_two_speakers(root: Path, df: pd.DataFrame) -> Path:
    extra = df.iloc[[1]].assign(speaker="spk_other")
    pd.concat([df, extra]).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def _wav_two_sessions(root: Path, df: pd.DataFrame) -> Path:
    extra = df.iloc[[1]].assign(session="sess_other", path="./" + df["path"][1])
    pd.concat([df, extra]).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def _duplicated_row(root: Path, df: pd.DataFrame) -> Path:
    pd.concat([df, df.iloc[[2]]]).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def _label_case(root: Path, df: pd.DataFrame) -> Path:
    labels = [{0: "Calm", 3: "calm "}.get(i, v) for i, v in enumerate(df["label"])]
    df.assign(label=labels).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


# name -> (break the manifest corpus, return the path the message must name)
BAD_MANIFEST_DATA = {
    "corrupt_wav": _corrupt_wav,
    "zero_length_wav": _zero_length_wav,
    "nan_samples": _nan_samples,
    "manifest_missing_columns": _missing_columns,
    "manifest_points_to_missing_file": _missing_file,
    "manifest_empty_label": _empty_label,
    "manifest_unknown_type": _not_a_manifest_type,
    "manifest_empty": _empty_manifest,
    "manifest_header_only": _header_only,
    "manifest_wav_under_two_speakers": _wav_two_speakers,
    "manifest_wav_under_two_sessions": _wav_two_sessions,
    "manifest_duplicated_row": _duplicated_row,
    "manifest_labels_differ_by_case": _label_case,
}
MANIFEST_MESSAGES = {  # the part of the one line that says what is wrong
    "manifest_empty": "the manifest is empty",
    "manifest_header_only": "the manifest has no rows",
    "manifest_wav_under_two_speakers": "is listed under 2 speakers ('spk1', 'spk_other')",
    "manifest_wav_under_two_sessions": "is listed under 2 sessions",
    "manifest_duplicated_row": "is listed 2 times, in rows [2, 12]",
    "manifest_labels_differ_by_case": "labels 'calm', 'Calm', 'calm ' differ only by case",
    "corrupt_wav": "not a readable audio file",
    "manifest_missing_columns": "missing columns ['speaker']",
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFEST_DATA))
def test_bad_manifest_data_exits_2_naming_the_path(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    manifest, df = _manifest(tmp_path)
    named = BAD_MANIFEST_DATA[case](manifest.parent, df)
    if case == "manifest_unknown_type":
        manifest = named
    results = tmp_path / "results"
    rc = main([str(_sweep_for(tmp_path, "manifest", manifest)), "--results", str(results)])
    err = capsys.readouterr().err
    _assert_refused(rc, err, str(named), results)
    assert MANIFEST_MESSAGES.get(case, "") in err


def test_the_unbroken_manifest_sweep_is_accepted(tmp_path: Path) -> None:
    """The baseline every bad-data case breaks in one place is itself fine."""
    manifest, df = _manifest(tmp_path)
    spec = load_spec(_sweep_for(tmp_path, "manifest", manifest))
    data = prepare_data(dict(spec.data))
    assert len(data.labels) == len(df) and data.classes == sorted(set(df["label"]))


def test_a_label_outside_the_class_list_names_the_manifest(tmp_path: Path) -> None:
    """Through prepare_data: a sweep file cannot give data.classes as a list today (the spec
    only takes an int, although the manifest corpus documents a class list: see the report)."""
    manifest, df = _manifest(tmp_path)
    spec = load_spec(_sweep_for(tmp_path, "manifest", manifest))
    data_cfg = dict(spec.data) | {"classes": ["calm", "tense"]}  # 'upbeat' is not in the list
    with pytest.raises(DataError) as info:
        prepare_data(data_cfg)
    assert str(manifest) in str(info.value) and "upbeat" in str(info.value)


def test_an_iemocap_root_that_does_not_exist_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "no" / "IEMOCAP_full_release"
    results = tmp_path / "results"
    rc = main([str(_sweep_for(tmp_path, "iemocap", root)), "--results", str(results)])
    _assert_refused(rc, capsys.readouterr().err, str(root), results)


def test_an_iemocap_root_without_sessions_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "IEMOCAP_full_release"
    (root / "Documentation").mkdir(parents=True)
    results = tmp_path / "results"
    rc = main([str(_sweep_for(tmp_path, "iemocap", root)), "--results", str(results)])
    _assert_refused(rc, capsys.readouterr().err, str(root), results)


def test_a_corrupt_iemocap_wav_exits_2_through_sweep_py(tmp_path: Path) -> None:
    root = tmp_path / "IEMOCAP_full_release"
    make_iemocap_tree(root, sessions=(1, 2), per_dialog=4)
    bad = next(root.glob("Session2/sentences/wav/*/*.wav"))
    bad.write_bytes(b"\x00" * 64)
    results = tmp_path / "results"
    proc = _sweep_py([str(_sweep_for(tmp_path, "iemocap", root)), "--results", str(results)])
    _assert_refused(proc.returncode, proc.stderr, str(bad), results)


def test_other_sample_rates_and_stereo_are_accepted_resampled_and_downmixed(
    tmp_path: Path,
) -> None:
    """Not bad input: an 8 kHz, a 44.1 kHz and a stereo file in the corpus all load as mono
    16 kHz, with the duration they had."""
    manifest, df = _manifest(tmp_path)
    root = manifest.parent
    seconds = 0.5
    write_wav(root / df["path"][0], seconds, sr=8_000)
    write_wav(root / df["path"][1], seconds, sr=44_100)
    write_wav(root / df["path"][2], seconds, channels=2)
    spec = load_spec(_sweep_for(tmp_path, "manifest", manifest))
    data = prepare_data(dict(spec.data))
    assert len(data.labels) == len(df)
    frames = data.lengths[:3].tolist()  # frames at the feature frame rate, same for all three
    expected = seconds * data.frame_rate
    for n in frames:
        assert abs(n - expected) <= 2, (frames, expected)
    from trainables.data.audio import read_audio

    for i in range(3):
        wave = read_audio(root / df["path"][i])
        assert wave.ndim == 1 and abs(len(wave) - 8000) <= 1, wave.shape
        assert np.isfinite(wave).all() and np.abs(wave).max() > 0.1

