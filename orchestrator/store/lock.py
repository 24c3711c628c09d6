"""One driver per sweep: a lease in the sweep folder, taken atomically, renewed, released.

A second `python sweep.py X.yaml` on a sweep that a live driver runs is refused at once (well under
a second: a directory listing and one small JSON read) with a message naming the holder (host, pid,
process start time, command line) and how to proceed. A lease left by a driver that died (SIGKILL,
OOM killer, power loss) is detected as stale and taken over, so resuming needs nothing by hand.

Layout: `<sweep>/driver.lock/lease-<N>.json`, N = 1, 2, 3, ... (the "generation"); the file with
the highest N is the lease in force. Each file holds JSON: token (unique per lease), host, boot_id,
pid_ns, pid, start_ticks (field 22 of /proc/<pid>/stat), process_started_at, started_at,
heartbeat_at, expires_at (ISO-8601 UTC), lease_seconds, command, released_at.

Why numbered files instead of one `driver.lock` file: taking over a stale lease must be race-free,
and POSIX has no "replace this file only if it still holds X" -- with one fixed name, a driver that
judged the old lease stale could rename away the fresh lease another driver had just put there.
Here every step is a create-if-absent of a name never used before:
- take: write the lease to a temporary file, then link(2) it to `lease-<top+1>.json`; link fails
  with EEXIST when that name exists, so of two drivers that judged lease <top> stale exactly one
  creates <top+1>; the other re-reads, finds the winner's fresh lease, and is refused;
- verify: after creating <N>, list again; if a higher lease exists the creator yields (deletes
  its file) -- this covers a driver whose listing was old (it created a lower number that had
  been cleaned up);
- the top lease is never deleted (release marks it `released_at`), only leases below it are, so
  a lower number created late always sees a higher one when it verifies.
(`release(forget=True)` deletes the top when nothing else was ever recorded, so a run refused for
bad input leaves no file behind; that gives up the rule above only for a driver stalled for the
whole run between its listing and its link, e.g. a SIGSTOPped process.)

Stale: the lease was released; or it is on THIS machine (same hostname, boot id and pid namespace)
and its pid is gone, a zombie, or now another process (its start time differs: a recycled pid is
not mistaken for the holder); or it is on another machine (or in another pid namespace, where the
pid cannot be checked) and its lease expired (a heartbeat thread renews it every
`heartbeat_seconds`, 30 by default; it lasts `lease_seconds`, 120 by default). A live holder on
this machine keeps its lease even when the heartbeat is late: it is alive, so it may still run
trials. Cross-machine expiry uses wall clocks: keep hosts within a few seconds (NTP).

Fencing: a holder whose lease was taken over (its heartbeat stopped for longer than the lease --
SIGSTOP, `scontrol suspend`, `docker pause`, an NFS stall -- or someone used --break-lock) must
not write once the new holder may. Every write to the store shows the lease's `Fence` (generation
and token): `Fence.check()` lists the lock folder and reads the lease right before a trial's file
appears (and again after: a write stalled in between is taken back), and refuses when a higher
generation exists, the token changed, or the lease has expired by this machine's clock (another
host may take an expired lease at any moment). The runner's stopper asks `valid()` (no disk) so
a stalled driver that resumes launches nothing; the heartbeat never renews an expired lease.
Either way `lost` becomes True, `on_lost` is called, and `check()` raises SweepLockLostError
(one line, exit 2). Host names come from `HOSTNAME_ENV` when set, else socket.gethostname().

Object stores (s3://, gs://, ...): pyarrow's filesystems offer no atomic create-if-absent, so a
lease there could not be taken race-free. The lock is then NOT enforced: `acquire` logs one warning
naming the sweep and returns a lock with `enforced == False`; running one driver per sweep is up
to the user (e.g. one job name per sweep in the scheduler). file:// URIs are local paths.

Hard links: where link(2) is not supported (some FUSE / SMB mounts) the lease is created with
O_CREAT|O_EXCL and then written; a reader that meets a half-written file retries briefly, and an
unreadable lease older than `lease_seconds` counts as stale.

Dependency-free (stdlib + trainables.errors) so it can be tested without Ray.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import json
import logging
import os
import re
import shlex
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trainables.errors import SersweepError

log = logging.getLogger(__name__)

LOCK_DIR = "driver.lock"  # <sweep>/driver.lock/lease-<N>.json
BREAK_LOCK_FLAG = "--break-lock"  # named in the refusal message; the CLI defines it
# The host name a lease records (default: socket.gethostname()). Containers sharing a results
# folder that all report the same host name (docker's default is the container id, so they
# rarely do) can be told apart with it; tests use it to play two machines.
HOSTNAME_ENV = "SERSWEEP_HOSTNAME"
DEFAULT_LEASE_SECONDS = 120.0
DEFAULT_HEARTBEAT_SECONDS = 30.0
_LEASE_NAME = re.compile(r"^lease-(\d+)\.json$")
_TMP_MARK = ".tmp-"
_UNREADABLE_RETRIES = 3  # a lease created with O_EXCL may be seen mid-write: re-read a few times
_UNREADABLE_WAIT_S = 0.1
_ACQUIRE_ATTEMPTS = 8  # each retry follows a lost create race: another driver acted meanwhile
_COMMAND_SHOWN = 200  # characters of the holder's command line in messages
_OLD_TMP_S = 3600.0  # temporary files of a writer that died: removed by the next winner
# link(2) unsupported here (FUSE, SMB, FAT...): fall back to O_CREAT|O_EXCL
_NO_LINK = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


class SweepLockedError(SersweepError):
    """Another driver holds the sweep's lease. `path`: the lease file; `holder`: its Lease."""

    def __init__(self, message: str, path: str, holder: Lease | None) -> None:
        self.path = path
        self.holder = holder
        super().__init__(message)


class SweepLockLostError(SersweepError):
    """This driver's lease was taken over by another driver (or deleted) while it ran."""


class SweepLockWriteError(SersweepError):
    """The lease cannot be written (read-only or full disk, no permission). `path` names it."""

    def __init__(self, path: str, exc: OSError) -> None:
        self.path = path
        super().__init__(
            f"{path}: cannot take the driver lock of this sweep: "
            f"{exc.strerror or type(exc).__name__} ({exc.filename or path})"
        )


@dataclass(frozen=True)
class Lease:
    """One lease file's content (`gen` and `path` come from its name, not its JSON)."""

    token: str
    host: str
    boot_id: str | None
    pid_ns: int | None
    pid: int
    start_ticks: int | None
    process_started_at: str | None
    started_at: str
    heartbeat_at: str
    expires_at: str
    lease_seconds: float
    command: str
    released_at: str | None = None
    gen: int = field(default=0, compare=False)
    path: str = field(default="", compare=False)

    def to_json(self) -> bytes:
        body = {k: v for k, v in asdict(self).items() if k not in ("gen", "path")}
        return (json.dumps(body, indent=1) + "\n").encode()

    def describe(self) -> str:
        """One line naming the holder (a long or multi-line command is shortened)."""
        started = self.process_started_at or self.started_at
        command = " ".join(self.command.split())
        if len(command) > _COMMAND_SHOWN:
            command = command[: _COMMAND_SHOWN - 3] + "..."
        return f"host {self.host}, pid {self.pid} (started {started}), command `{command}`"


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


@functools.cache
def _machine() -> tuple[str, str | None, int | None]:
    """(hostname, boot id, pid-namespace inode): a pid is comparable only when all three match."""
    boot_id: str | None = None
    with contextlib.suppress(OSError):
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    pid_ns: int | None = None
    with contextlib.suppress(OSError):
        pid_ns = os.stat("/proc/self/ns/pid").st_ino
    return os.environ.get(HOSTNAME_ENV) or socket.gethostname(), boot_id, pid_ns


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of `pid` from /proc, or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name may hold spaces and parentheses
    return fields[0], int(fields[19])  # fields[0] is stat field 3 (state); starttime is field 22


def process_start_ticks(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot (Linux), or None."""
    stat = _proc_stat(pid)
    return None if stat is None else stat[1]


def _ticks_to_iso(ticks: int | None) -> str | None:
    if ticks is None:
        return None
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                boot = int(line.split()[1])
                return _iso(datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"), UTC))
    except (OSError, ValueError):
        pass
    return None


def _command_line() -> str:
    """This process's command line (/proc/self/cmdline keeps `python -c ...` whole)."""
    try:
        parts = Path("/proc/self/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        return shlex.join(p.decode(errors="replace") for p in parts)
    except OSError:
        return shlex.join([sys.executable, *sys.argv])


def _holder_alive_here(lease: Lease) -> tuple[bool, str]:
    """Liveness of a holder on this machine, by pid and process start time."""
    stat = _proc_stat(lease.pid)
    if stat is None:
        if Path("/proc/self/stat").exists():
            return False, f"pid {lease.pid} is gone"
        try:  # no /proc (macOS): existence only
            os.kill(lease.pid, 0)
        except ProcessLookupError:
            return False, f"pid {lease.pid} is gone"
        except PermissionError:
            pass
        return True, f"pid {lease.pid} is alive"
    state, ticks = stat
    if state in ("Z", "X"):
        return False, f"pid {lease.pid} has exited (zombie)"
    if lease.start_ticks is not None and ticks != lease.start_ticks:
        return False, (
            f"pid {lease.pid} is now another process (started at tick {ticks}, "
            f"the holder at {lease.start_ticks})"
        )
    return True, f"pid {lease.pid} is alive"


def judge(lease: Lease, now: datetime | None = None) -> tuple[bool, str]:
    """(live, why) of a lease held by another driver, as this machine sees it."""
    now = now or _now()
    if lease.released_at is not None:
        return False, f"released at {lease.released_at}"
    host, boot_id, pid_ns = _machine()
    # None == None off Linux (no /proc): the pid is then checked by existence only
    if (lease.host, lease.boot_id, lease.pid_ns) == (host, boot_id, pid_ns):
        return _holder_alive_here(lease)
    left = (_parse_time(lease.expires_at) - now).total_seconds()
    if left > 0:
        return True, f"another host's lease, expires in {left:.0f} s"
    return False, f"another host's lease, expired {-left:.0f} s ago"


class _Unreadable(Exception):
    """A lease file that does not parse (half-written, edited, or damaged)."""


def _read_lease(path: Path, gen: int) -> Lease:
    """The lease in `path`; FileNotFoundError if it vanished, _Unreadable if it does not parse."""
    for attempt in range(_UNREADABLE_RETRIES):
        data = path.read_bytes()
        try:
            body = json.loads(data)
            lease = Lease(**{k: body[k] for k in Lease.__dataclass_fields__ if k in body},
                          gen=gen, path=str(path))  # fmt: skip
            if not isinstance(lease.pid, int) or not isinstance(lease.token, str):
                raise TypeError("pid must be an integer and token a string")
            _parse_time(lease.expires_at), _parse_time(lease.heartbeat_at)
            return lease
        except (ValueError, TypeError, KeyError) as exc:
            if attempt == _UNREADABLE_RETRIES - 1:
                raise _Unreadable(f"{type(exc).__name__}: {exc}") from exc
            time.sleep(_UNREADABLE_WAIT_S)
    raise AssertionError("unreachable")


def _lease_gens(lock_dir: Path) -> list[int]:
    """Generations of the lease files present, ascending."""
    try:
        names = os.listdir(lock_dir)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for m in map(_LEASE_NAME.match, names) if m)


def _lease_path(lock_dir: Path, gen: int) -> Path:
    return lock_dir / f"lease-{gen:06d}.json"


def _write_tmp(lock_dir: Path, final: Path, payload: bytes) -> Path:
    tmp = lock_dir / f".{final.name}{_TMP_MARK}{uuid.uuid4().hex}"
    with open(tmp, "wb") as out:
        out.write(payload)
        out.flush()
        os.fsync(out.fileno())
    return tmp


def _create_exclusive(lock_dir: Path, gen: int, payload: bytes) -> bool:
    """Create lease-<gen>.json holding `payload` if no such file exists; False if one does."""
    final = _lease_path(lock_dir, gen)
    tmp = _write_tmp(lock_dir, final, payload)
    try:
        try:
            os.link(tmp, final)  # atomic create-if-absent with the whole content in place
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_LINK:
                raise
        try:
            fd = os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _rewrite(lock_dir: Path, lease: Lease) -> None:
    """Replace the content of this driver's own lease file (renew / release) atomically."""
    final = _lease_path(lock_dir, lease.gen)
    tmp = _write_tmp(lock_dir, final, lease.to_json())
    try:
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _local_dir(sweep_dir: str | os.PathLike) -> Path | None:
    """The local folder of a sweep, or None for an object-store URI."""
    text = os.fspath(sweep_dir)
    if "://" not in text:
        return Path(text).absolute()
    scheme, rest = text.split("://", 1)
    return Path(rest).absolute() if scheme == "file" else None


@dataclass(frozen=True)
class Fence:
    """What a writer shows before each write to the store: the lease generation it holds, and
    its token. `check()` reads the lease folder (one listing, one small read) and raises
    SweepLockLostError unless that lease is still the one in force, not released, and not
    expired by this machine's clock -- an expired lease may have been taken over by a driver
    on another host at any moment, so its holder must not write any more even before it sees
    the new lease. Picklable (paths and strings), so a searcher Tune pickles can carry it.
    `lock_dir` None: an object store, where no lease is enforced (check passes)."""

    sweep_dir: str
    lock_dir: str | None
    gen: int
    token: str

    def check(self) -> None:
        reason = self.lost_reason()
        if reason is not None:
            raise SweepLockLostError(lost_message(self.sweep_dir, reason))

    def lost_reason(self) -> str | None:
        """Why the lease is no longer this writer's, else None."""
        if self.lock_dir is None:
            return None
        lock_dir = Path(self.lock_dir)
        gens = _lease_gens(lock_dir)
        if gens and gens[-1] > self.gen:
            return _taken_by(lock_dir, gens[-1])
        try:
            lease = _read_lease(_lease_path(lock_dir, self.gen), self.gen)
        except FileNotFoundError:
            return "its lease file was deleted"
        except _Unreadable:
            return "its lease file was overwritten"
        if lease.token != self.token:
            return "replaced by another driver"
        if lease.released_at is not None:
            return f"released at {lease.released_at}"
        return _expired(lease)


def _expired(lease: Lease, now: datetime | None = None) -> str | None:
    """Why `lease` (this driver's own) has expired by this machine's clock, else None."""
    late = ((now or _now()) - _parse_time(lease.expires_at)).total_seconds()
    if late < 0:
        return None
    return (f"the lease expired {late:.0f} s ago (this driver was stalled -- suspended, "
            f"paused or starved -- past its {lease.lease_seconds:.0f} s lease, so another "
            "host may have taken the sweep over)")


def _taken_by(lock_dir: Path, gen: int) -> str:
    try:
        return f"taken over by {_read_lease(_lease_path(lock_dir, gen), gen).describe()}"
    except (FileNotFoundError, _Unreadable):
        return f"taken over by another driver (lease {gen})"


def lost_message(sweep_dir: str, reason: str) -> str:
    """The one line a driver that lost its lease stops with."""
    return (f"{sweep_dir}: this driver lost the sweep's driver lock ({reason}); it stopped "
            "launching trials and recorded nothing after that. Trials recorded before are "
            "intact; if no other driver runs this sweep, rerun the same command to continue it")


class SweepLock:
    """The lease of one driver on one sweep folder (a path or URI).

    with SweepLock(store.sweep_dir):   # raises SweepLockedError if another driver holds it
        ...run the sweep...
    `break_lock=True` takes the lease whatever the holder's state (the user is sure it is gone).
    Released on leaving the `with`, on `release()`, or at interpreter exit (atexit), in each case
    only if the lease is still this driver's. One acquire per object."""

    def __init__(
        self,
        sweep_dir: str | os.PathLike,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
        break_lock: bool = False,
        command: str | None = None,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        if not 0 < heartbeat_seconds < lease_seconds:
            raise ValueError(
                f"heartbeat_seconds ({heartbeat_seconds}) must be > 0 and below lease_seconds "
                f"({lease_seconds}): a lease must be renewed before it expires"
            )
        self.sweep_dir = os.fspath(sweep_dir)
        local = _local_dir(sweep_dir)
        self.enforced = local is not None
        self.lock_dir = (local / LOCK_DIR) if local is not None else None
        self.lease_seconds = float(lease_seconds)
        self.heartbeat_seconds = float(heartbeat_seconds)
        self.break_lock = break_lock
        self.command = command if command is not None else _command_line()
        self.on_lost = on_lost
        self.lease: Lease | None = None
        self.took_over: Lease | None = None  # the stale (or broken) lease this driver replaced
        self.lost_reason: str | None = None
        self._owner_pid: int | None = None
        self._created_dirs: list[Path] = []
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._used = False

    # -- public -------------------------------------------------------------------------------

    @property
    def held(self) -> bool:
        return self.lease is not None and self.lost_reason is None

    @property
    def lost(self) -> bool:
        return self.lost_reason is not None

    def acquire(self) -> SweepLock:
        """Take the lease, or raise SweepLockedError naming the holder (SweepLockWriteError:
        the lease file cannot be written there)."""
        if self._used:
            raise RuntimeError("a SweepLock is acquired once; make a new one")
        self._used = True
        try:
            return self._acquire()
        except OSError as exc:  # before anything of the sweep is written: one clear message
            raise SweepLockWriteError(str(self.lock_dir), exc) from exc

    def _acquire(self) -> SweepLock:
        if self.lock_dir is None:
            log.warning(
                "driver lock not enforced for %s: object stores have no atomic create-if-absent, "
                "so make sure only one driver runs this sweep",
                self.sweep_dir,
            )
            return self
        self._make_dirs()
        for _ in range(_ACQUIRE_ATTEMPTS):
            gens = _lease_gens(self.lock_dir)
            top = gens[-1] if gens else 0
            replaced: tuple[Lease | None, str] | None = None
            if top:
                try:
                    replaced = self._check_top(top)
                except FileNotFoundError:
                    continue  # the top vanished (deleted by hand, or forgotten): list again
            mine = self._new_lease(top + 1)
            if not _create_exclusive(self.lock_dir, mine.gen, mine.to_json()):
                continue  # another driver created that generation first: judge its lease
            if any(g > mine.gen for g in _lease_gens(self.lock_dir)):
                # our listing was older than a lease created meanwhile: that one wins
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(mine.path)
                continue
            self._won(mine, replaced)
            return self
        raise SweepLockedError(
            f"{self.sweep_dir}: could not take the driver lock in {self.lock_dir}: it kept "
            f"changing under {_ACQUIRE_ATTEMPTS} attempts (other drivers starting at the same "
            "time?); retry",
            str(self.lock_dir),
            None,
        )

    def refuse_if_held(self) -> None:
        """Raise SweepLockedError now if a live driver holds the lease; writes nothing. A cheap
        early check (one listing, one read) for before a slow start-up; `acquire` stays the
        step that decides."""
        if self.lock_dir is None or self.break_lock:
            return
        gens = _lease_gens(self.lock_dir)
        if gens:
            with contextlib.suppress(FileNotFoundError):  # gone meanwhile: acquire decides
                self._check_top(gens[-1])

    def release(self, *, forget: bool = False) -> None:
        """Give the lease up if it is still ours. `forget`: delete it (and the folders that
        acquire created, when empty) instead of marking it released -- for a run that wrote
        nothing else, e.g. refused for bad input."""
        if self.lease is None or os.getpid() != self._owner_pid:
            return  # not held, or a forked child: the parent still holds it
        self._stop.set()
        if self._heartbeat is not None and self._heartbeat is not threading.current_thread():
            self._heartbeat.join(timeout=5)
        atexit.unregister(self._release_at_exit)
        lease, self.lease = self.lease, None
        assert self.lock_dir is not None
        path = Path(lease.path)
        try:
            current = _read_lease(path, lease.gen)
        except FileNotFoundError:
            return
        except _Unreadable as exc:
            log.warning("not releasing driver lock %s: it does not parse (%s)", path, exc)
            return
        if current.token != lease.token:
            return  # no longer ours
        try:
            if forget and _lease_gens(self.lock_dir) == [lease.gen]:
                os.unlink(path)
                for folder in [self.lock_dir, *self._created_dirs]:
                    with contextlib.suppress(OSError):  # not empty: something else was written
                        folder.rmdir()
                return
            now = _iso(_now())
            _rewrite(self.lock_dir, replace(current, released_at=now, expires_at=now))
        except OSError as exc:  # a full or read-only disk must not hide the sweep's own outcome
            log.warning("could not release driver lock %s: %s", path, exc)

    def check(self) -> None:
        """Raise SweepLockLostError if another driver took this lease over."""
        if self.lost_reason is not None:
            raise SweepLockLostError(self.lost_reason)

    def fence(self) -> Fence:
        """The Fence of the lease this driver holds (acquire first)."""
        if self.lock_dir is None:
            return Fence(self.sweep_dir, None, 0, "")
        if self.lease is None:
            raise RuntimeError("SweepLock.fence() needs the lease: acquire it first")
        return Fence(self.sweep_dir, str(self.lock_dir), self.lease.gen, self.lease.token)

    def valid(self) -> bool:
        """Whether this driver may still launch trials, without touching the disk: the lease
        is held, not found lost, and not expired by this machine's clock (a process stopped
        past its lease must not act before its heartbeat notices). Writes check the Fence."""
        if self.lock_dir is None:
            return True
        lease = self.lease
        if lease is None or self.lost_reason is not None:
            return False
        reason = _expired(lease)
        if reason is not None:
            self._lose(lost_message(self.sweep_dir, reason))
            return False
        return True

    def __enter__(self) -> SweepLock:
        return self.acquire()

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    # -- internals ----------------------------------------------------------------------------

    def _make_dirs(self) -> None:
        """Create the lock folder, remembering which folders did not exist (for forget)."""
        assert self.lock_dir is not None
        missing: list[Path] = []
        folder = self.lock_dir
        while not folder.exists() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        self._created_dirs = [d for d in missing if d != self.lock_dir]  # innermost first

    def _new_lease(self, gen: int) -> Lease:
        host, boot_id, pid_ns = _machine()
        pid = os.getpid()
        ticks = process_start_ticks(pid)
        now = _now()
        assert self.lock_dir is not None
        return Lease(
            token=uuid.uuid4().hex, host=host, boot_id=boot_id, pid_ns=pid_ns, pid=pid,
            start_ticks=ticks, process_started_at=_ticks_to_iso(ticks), started_at=_iso(now),
            heartbeat_at=_iso(now), expires_at=_iso(_add(now, self.lease_seconds)),
            lease_seconds=self.lease_seconds, command=self.command, gen=gen,
            path=str(_lease_path(self.lock_dir, gen)),
        )  # fmt: skip

    def _check_top(self, top: int) -> tuple[Lease | None, str]:
        """(the top lease, why it may be replaced: stale, released, or break_lock), else raise
        SweepLockedError. Lease None: an unreadable lease old enough to count as stale."""
        assert self.lock_dir is not None
        path = _lease_path(self.lock_dir, top)
        try:
            lease = _read_lease(path, top)
        except _Unreadable as exc:
            age = time.time() - path.stat().st_mtime
            if self.break_lock or age > self.lease_seconds:
                return None, f"unreadable lease file {path} ({exc}, {age:.0f} s old)"
            raise SweepLockedError(
                f"{self.sweep_dir} has a driver lock that does not parse ({path}: {exc}); if no "
                f"driver runs this sweep, rerun with {BREAK_LOCK_FLAG} (or delete "
                f"{self.lock_dir})",
                str(path),
                None,
            ) from None
        live, why = judge(lease)
        if live and not self.break_lock:
            raise SweepLockedError(self._refusal(lease, why), str(path), lease)
        return lease, f"{why}; {BREAK_LOCK_FLAG} given" if live else why

    def _refusal(self, lease: Lease, why: str) -> str:
        beat = (_now() - _parse_time(lease.heartbeat_at)).total_seconds()
        return (
            f"{self.sweep_dir} is in use by another sweep driver: {lease.describe()}; lease "
            f"renewed {beat:.0f} s ago ({why}; lease file {lease.path}). Wait for it to finish, "
            f"or, if you are sure it is gone, rerun with {BREAK_LOCK_FLAG} (or delete "
            f"{self.lock_dir})"
        )

    def _won(self, mine: Lease, replaced: tuple[Lease | None, str] | None) -> None:
        assert self.lock_dir is not None
        self.lease = mine
        self._owner_pid = os.getpid()
        if replaced is not None:
            old, why = replaced
            if old is None:
                log.warning("took over the driver lock of %s: %s", self.sweep_dir, why)
            elif old.released_at is None:  # a released lease is simply free: nothing to say
                self.took_over = old
                log.warning("took over the driver lock of %s from %s: %s", self.sweep_dir,
                            old.describe(), why)  # fmt: skip
        self._clean_below(mine.gen)
        atexit.register(self._release_at_exit)
        self._heartbeat = threading.Thread(
            target=self._beat, name=f"sweep-lock-heartbeat-{mine.gen}", daemon=True
        )
        self._heartbeat.start()

    def _clean_below(self, gen: int) -> None:
        """Delete leases below ours and temporaries of writers that died (best effort)."""
        assert self.lock_dir is not None
        for old in _lease_gens(self.lock_dir):
            if old < gen:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(_lease_path(self.lock_dir, old))
        now = time.time()
        for name in os.listdir(self.lock_dir):
            if name.startswith(".") and _TMP_MARK in name:
                path = self.lock_dir / name
                with contextlib.suppress(FileNotFoundError):
                    if now - path.stat().st_mtime > _OLD_TMP_S:
                        path.unlink()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                self._renew()
            except OSError as exc:  # e.g. a full disk: keep trying, the lease is still ours
                log.warning("could not renew driver lock %s: %s", self.lock_dir, exc)
            if self.lost_reason is not None:
                return

    def _renew(self) -> None:
        lease = self.lease
        if lease is None or self.lock_dir is None:
            return
        # Our own file says when it expires; past that, another host may hold the sweep even
        # if its lease is not listed yet: never renew an expired lease, it is lost.
        reason = _expired(lease) or self.fence().lost_reason()
        if reason is not None:
            self._lose(lost_message(self.sweep_dir, reason))
            return
        now = _now()
        renewed = replace(lease, heartbeat_at=_iso(now),
                          expires_at=_iso(_add(now, self.lease_seconds)))  # fmt: skip
        _rewrite(self.lock_dir, renewed)
        self.lease = renewed

    def _lose(self, reason: str) -> None:
        if self.lost_reason is not None:
            return
        self.lost_reason = reason
        log.info("%s", reason)  # the runner stops with this line (exit 2); once is enough
        if self.on_lost is not None:
            self.on_lost(reason)

    def _release_at_exit(self) -> None:
        self.release()


def _add(moment: datetime, seconds: float) -> datetime:
    return datetime.fromtimestamp(moment.timestamp() + seconds, UTC)


def current_lease(sweep_dir: str | os.PathLike) -> Lease | None:
    """The lease in force on a local sweep folder (None: none, unreadable, or an object store)."""
    local = _local_dir(sweep_dir)
    if local is None:
        return None
    gens = _lease_gens(local / LOCK_DIR)
    if not gens:
        return None
    try:
        return _read_lease(_lease_path(local / LOCK_DIR, gens[-1]), gens[-1])
    except (FileNotFoundError, _Unreadable):
        return None
