"""One writer per data root: a second run on the same `data_root` is refused before any job.

Snakemake's own lock lives in its working directory (`.snakemake/locks`), so two runs started
from two clones, or with `-d`, on one data root would both run, and both pay for the same
documents. This lock lives in the data root itself.

- `<data_root>/.daydream-writer.lock` is locked with `flock` by the main Snakemake process for
  its whole run (the `onstart` hook; Slurm batch jobs are started with `--no-hooks` and never
  take it). The kernel releases a flock when the process ends, even on `kill -9`, so a
  local filesystem never has a stale lock. The file holds the holder: host, pid, working
  directory, start time and command.
- Where flock does not work, or works only within one host (NFS mounted with `nolock` or
  `local_lock=...`, sshfs), `<data_root>/.daydream-writer.marker` is created with O_EXCL as
  well (`writer_lock: marker` in the config forces this). A killed run leaves the marker
  behind; the next run removes it by itself only when the holder was on this host and its
  process is gone, and otherwise names the holder and the safe way past:
  `python scripts/data_root_lock.py release --data-root DIR`.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from daydream.errors import UserError

LOCK_FILE = ".daydream-writer.lock"
MARKER_FILE = ".daydream-writer.marker"
MODES = ("auto", "marker")
RELEASE_COMMAND = "python scripts/data_root_lock.py release --data-root {data_root}"
# flock errors that mean "this filesystem does not do locks", not "someone holds it"
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}
# Filesystems whose flock, if it works, excludes only processes of the same host.
_HOST_LOCAL_FS = ("fuse.sshfs", "fuse.rclone", "fuse.s3fs")


class DataRootBusy(RuntimeError, UserError):
    """Another run holds the data root; the message names it and what to do."""


class CannotStart(RuntimeError):
    """A run that could never make a document (no cores, a data root it cannot write): said at
    once, before the data root is held."""


def check_can_start(data_root: str | Path, *, cores: int | None, local_exec: bool) -> None:
    """CannotStart when jobs run in this process and `--cores` is below 1 (Snakemake would wait
    for a core forever), or when the data root cannot be written (a read-only mount or folder)."""
    if local_exec and cores is not None and cores < 1:
        raise CannotStart(f"--cores {cores}: no job can start with fewer than one core, so the run would wait for "
                          "ever; run with --cores N (N >= 1), e.g. --cores 8")
    root = Path(data_root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as error:
        raise CannotStart(f"the data root {root} cannot be written ({error.strerror or error}); make it writable "
                          "(or mount it read-write), or give the run another data_root: --config data_root=DIR") from error


class LockUnavailable(RuntimeError):
    """The data root's lock cannot be taken for another reason (the message says which)."""


@dataclass
class Held:
    data_root: Path
    fd: int | None  # the flocked lock file, open for the process's life; None without flock
    marker: Path | None  # the marker this process created, removed when it exits
    holder: dict


_HELD: dict[str, Held] = {}
_LOCK = threading.Lock()


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str:
    """The start time of a process in clock ticks since boot ("" when unknown or gone), so a
    reused pid is not taken for the holder."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    return fields[19] if len(fields) > 19 else ""


def _command() -> str:
    """The command line of this process as a person would type it."""
    first, *rest = sys.argv or [""]
    name = "snakemake" if first.endswith(("snakemake/__main__.py", "/snakemake")) or first == "snakemake" else first
    return shlex.join([name, *rest])


def holder_record(mode: str) -> dict:
    """Who holds the data root: enough to find the run and to tell whether it still runs."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "working_directory": os.getcwd(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"), "command": _command(),
            "mode": mode, "boot_id": _boot_id(), "process_start": _process_start(pid)}


def _read_holder(path: Path) -> dict:
    try:
        holder = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def describe(holder: dict) -> str:
    if not holder:
        return "a run that has not recorded itself yet"
    return (f"the run started {holder.get('started_at', '?')} on host {holder.get('host', '?')}, pid "
            f"{holder.get('pid', '?')}, in {holder.get('working_directory', '?')}: {holder.get('command', '?')}")


def holder_is_gone(holder: dict) -> bool | None:
    """True when the holder ran on this host (same boot) and its process is gone; False when
    it still runs; None when that cannot be known from here (another host)."""
    if not holder or holder.get("host") != socket.gethostname():
        return None
    if holder.get("boot_id") and holder.get("boot_id") != _boot_id():
        return True  # this host has rebooted since
    pid = int(holder.get("pid") or 0)
    start = _process_start(pid) if pid > 0 else ""
    return not start or (bool(holder.get("process_start")) and start != holder["process_start"])


def _mount_of(path: Path) -> tuple[str, str, str]:
    """(mount point, filesystem type, options) of the mount holding `path`, from mountinfo."""
    best = ("", "", "")
    real = os.path.realpath(path)
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return best
    for line in lines:
        left, _, right = line.partition(" - ")
        parts, rest = left.split(), right.split()
        if len(parts) < 6 or len(rest) < 3:
            continue
        point = parts[4].replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, rest[0], f"{parts[5]},{rest[2]}")
    return best


def flock_reach(data_root: Path) -> str | None:
    """Why a flock in `data_root` would not exclude runs on other hosts (None: it would, or
    the filesystem is local)."""
    point, fstype, options = _mount_of(data_root)
    opts = set(options.split(","))
    if fstype.startswith("nfs") and ({"nolock", "local_lock=flock", "local_lock=all"} & opts):
        return (f"{point} is NFS mounted with {', '.join(sorted({'nolock', 'local_lock=flock', 'local_lock=all'} & opts))}: "
                "its locks do not reach other hosts")
    if fstype in _HOST_LOCAL_FS:
        return f"{point} is {fstype}: its locks do not reach other hosts"
    return None


def _try_flock(path: Path) -> tuple[int | None, str | None]:
    """(fd, None) with the lock held; (None, why) when the filesystem does not do flock.
    DataRootBusy when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = _read_holder(path)
        raise DataRootBusy(
            f"{path.parent} is in use by {describe(holder)}. Two runs on one data root would pay for the "
            f"same documents twice. Wait for that run to end, or stop it (kill {holder.get('pid', '<pid>')} on "
            f"{holder.get('host', 'its host')}); to run both at once, give this one another data_root.") from None
    except OSError as error:
        os.close(fd)
        if error.errno in _UNSUPPORTED:
            return None, f"flock on {path} fails: {error.strerror}"
        raise
    return fd, None


def _write_holder(fd: int, holder: dict) -> None:
    data = (json.dumps(holder, indent=2) + "\n").encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _take_marker(data_root: Path, holder: dict, why: str) -> Path:
    marker = data_root / MARKER_FILE
    for _ in range(2):
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            other = _read_holder(marker)
            if holder_is_gone(other):  # the holder ran here and has ended: provably stale
                marker.unlink(missing_ok=True)
                continue
            raise DataRootBusy(
                f"{data_root} is held by {describe(other)}. This data root has no lock that reaches every "
                f"host ({why}), so the marker {marker} stands for the lock, and a run that was killed leaves "
                f"it behind. If that run is still going, wait for it. If it has ended (check on "
                f"{other.get('host', 'its host')}: ps -p {other.get('pid', '<pid>')}), release it with: "
                f"{RELEASE_COMMAND.format(data_root=data_root)} (from another host than the holder's, add "
                "--force once you have checked). Two runs on one data root would pay for the same documents "
                "twice.") from None
        try:
            os.write(fd, (json.dumps({**holder, "marker_reason": why}, indent=2) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        return marker
    raise LockUnavailable(f"{marker}: could not be created; check the permissions of {data_root}")


def acquire(data_root: str | Path, *, mode: str = "auto") -> Held:
    """Hold `data_root` for this process's life (see the module docstring); DataRootBusy when
    another run holds it. Taking it again in the same process returns the same hold."""
    if mode not in MODES:
        raise ValueError(f"writer_lock={mode!r}: use one of {', '.join(MODES)}")
    root = Path(data_root)
    key = os.path.realpath(root)
    with _LOCK:
        if key in _HELD:
            return _HELD[key]
        root.mkdir(parents=True, exist_ok=True)
        holder = holder_record(mode)
        fd, unsupported = _try_flock(root / LOCK_FILE)
        if fd is not None:
            _write_holder(fd, holder)
        why = unsupported or flock_reach(root) or ("writer_lock: marker in the config" if mode == "marker" else None)
        marker = None
        if why:
            try:
                marker = _take_marker(root, holder, why)
            except BaseException:
                if fd is not None:
                    os.close(fd)
                raise
        held = _HELD[key] = Held(root, fd, marker, holder)
        return held


def release(data_root: str | Path) -> None:
    """Give up this process's hold of `data_root` (also done when the process exits)."""
    with _LOCK:
        held = _HELD.pop(os.path.realpath(Path(data_root)), None)
    if held is None:
        return
    if held.marker is not None and _read_holder(held.marker).get("pid") == held.holder["pid"]:
        held.marker.unlink(missing_ok=True)
    if held.fd is not None:
        os.close(held.fd)


def _release_all() -> None:
    for held in list(_HELD.values()):
        release(held.data_root)


atexit.register(_release_all)


def status(data_root: str | Path) -> str:
    """A line on who holds `data_root`, for people (`scripts/data_root_lock.py status`)."""
    root = Path(data_root)
    lock, marker = root / LOCK_FILE, root / MARKER_FILE
    lines = []
    if lock.exists():
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            lines.append(f"{lock}: free (last held by {describe(_read_holder(lock))})")
        except BlockingIOError:
            lines.append(f"{lock}: held by {describe(_read_holder(lock))}")
        except OSError as error:
            lines.append(f"{lock}: flock does not work here ({error.strerror})")
        finally:
            os.close(fd)
    if marker.exists():
        other = _read_holder(marker)
        gone = holder_is_gone(other)
        state = {True: "its process is gone", False: "its process is running", None: "on another host"}[gone]
        lines.append(f"{marker}: held by {describe(other)} ({state}; a marker because "
                     f"{other.get('marker_reason', 'flock does not reach every host')})")
    return "\n".join(lines) or f"{root}: not held by any run"


def release_marker(data_root: str | Path, *, force: bool = False) -> str:
    """Remove a marker left by a run that has ended. Refused while the holder runs on this
    host; a holder on another host needs `force` (after checking there)."""
    marker = Path(data_root) / MARKER_FILE
    if not marker.exists():
        return f"{marker}: no marker; nothing to release"
    other = _read_holder(marker)
    gone = holder_is_gone(other)
    if gone is False:
        raise DataRootBusy(f"{marker}: {describe(other)} is still running; stop it first (kill {other.get('pid')})")
    if gone is None and not force:
        raise DataRootBusy(f"{marker}: held by {describe(other)}, on another host, so this host cannot tell "
                           f"whether it still runs. Check on {other.get('host', 'that host')} (ps -p "
                           f"{other.get('pid', '<pid>')}); if it has ended, run this again with --force")
    marker.unlink(missing_ok=True)
    return f"{marker}: released (was {describe(other)})"
