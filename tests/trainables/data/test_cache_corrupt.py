"""A corrupt feature-cache entry is detected, noted in one line naming the file, and rebuilt.

Each test corrupts a REAL entry written by prepare_data (truncation, a flipped byte, a zeroed
block, a missing or damaged checksum file, an archive torch cannot load) and checks that the next
prepare_data is a miss that logs one note naming the entry, returns exactly what a build without
any cache returns, and rewrites the entry so the load after that is a verified hit.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.trainables.data.fixtures import SMALL_SYNTHETIC
from trainables.config import DATA_DEFAULTS, with_defaults
from trainables.data import PreparedData, prepare_data
from trainables.data.cache import checksum_path, file_sha256

REPO = Path(__file__).resolve().parents[3]
CACHE_LOGGER = "trainables.data.cache"


def _cfg(cache_dir: str | None) -> dict:
    return with_defaults({"synthetic_utterances": SMALL_SYNTHETIC, "max_seconds": 1.0,
                          "n_mels": 16, "cache_dir": cache_dir}, DATA_DEFAULTS)  # fmt: skip


@pytest.fixture(scope="module")
def fresh() -> PreparedData:
    """The same data built with no cache at all."""
    return prepare_data(_cfg(None))


def _assert_same(data: PreparedData, fresh: PreparedData) -> None:
    assert torch.equal(data.features, fresh.features)
    assert torch.equal(data.lengths, fresh.lengths) and torch.equal(data.labels, fresh.labels)
    assert (data.ids, data.speakers, data.sessions, data.classes) == (
        fresh.ids, fresh.speakers, fresh.sessions, fresh.classes)
    assert [f.name for f in data.folds] == [f.name for f in fresh.folds]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40  # the middle of the file: inside the features tensor
    path.write_bytes(bytes(data))


def _zero_block(path: Path) -> None:
    data = bytearray(path.read_bytes())
    start = len(data) * 3 // 4
    data[start : start + 4096] = bytes(len(data[start : start + 4096]))  # a lost disk block
    path.write_bytes(bytes(data))


def _drop_checksum(path: Path) -> None:
    checksum_path(path).unlink()


def _damage_checksum(path: Path) -> None:
    checksum_path(path).write_text('{"sha256": ')


def _not_loadable(path: Path) -> None:
    """A valid zip archive that is no torch file, with a MATCHING checksum file."""
    path.unlink()
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data.pkl", b"not a pickle")
    record = {"file": path.name, "sha256": file_sha256(path), "size": path.stat().st_size}
    checksum_path(path).write_text(json.dumps(record))


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (_truncate, "is truncated or damaged"),
    "flipped_byte": (_flip_byte, "is corrupt: sha256"),
    "zeroed_block": (_zero_block, "is corrupt: sha256"),
    "no_checksum_file": (_drop_checksum, "has no checksum file"),
    "damaged_checksum_file": (_damage_checksum, "has an unreadable checksum file"),
    "not_loadable": (_not_loadable, "does not load"),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupt_entry_is_noted_and_rebuilt(
    corruption: str, tmp_path: Path, fresh: PreparedData, caplog: pytest.LogCaptureFixture
) -> None:
    first = prepare_data(_cfg(str(tmp_path)))
    path = Path(first.info["cache_path"])
    assert first.info["cache"] == "miss"
    corrupt, why = CORRUPTIONS[corruption]
    corrupt(path)

    caplog.set_level(logging.WARNING, logger=CACHE_LOGGER)
    again = prepare_data(_cfg(str(tmp_path)))
    notes = [r.getMessage() for r in caplog.records if r.name == CACHE_LOGGER]
    assert again.info["cache"] == "miss"
    assert len(notes) == 1 and str(path) in notes[0] and why in notes[0], notes
    assert "rebuilding" in notes[0] and "\n" not in notes[0]
    _assert_same(again, fresh)

    caplog.clear()
    third = prepare_data(_cfg(str(tmp_path)))  # rewritten with a checksum that matches
    assert third.info["cache"] == "hit" and not caplog.records
    _assert_same(third, fresh)


def test_torch_loads_a_flipped_byte_silently_so_only_the_checksum_catches_it(
    tmp_path: Path, fresh: PreparedData
) -> None:
    """Why the checksum file exists: torch.load does not check the archive's CRCs."""
    path = Path(prepare_data(_cfg(str(tmp_path))).info["cache_path"])
    _flip_byte(path)
    wrong = torch.load(path, weights_only=True)  # no error...
    assert not torch.equal(wrong["features"], fresh.features)  # ...and a wrong feature value


@pytest.mark.slow  # a fresh interpreter imports torch: ~10 s on the 2-core CI machine
def test_the_note_reaches_stderr_as_one_line(tmp_path: Path) -> None:
    """No logging configured (a plain script): the warning still prints, as one line."""
    path = Path(prepare_data(_cfg(str(tmp_path))).info["cache_path"])
    _flip_byte(path)
    code = (
        "import sys; from pathlib import Path; from trainables.data import cache; "
        "print('miss' if cache.load(Path(sys.argv[1])) is None else 'hit')"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "miss", proc.stderr
    lines = [line for line in proc.stderr.splitlines() if str(path) in line]
    assert len(lines) == 1 and "is corrupt" in lines[0] and "rebuilding" in lines[0], proc.stderr
