"""Who owns a run directory: a marker written when a run starts, a lock held while one trains.

    RUN_DIR/myllm101_run.json   {"format": "myllm101-run", "version": 1, "created": ISO time,
                                 "run_id": uuid hex}: this directory is a myllm101 run
    RUN_DIR/.myllm101-lock      {"pid", "host", "started"} of the process training in it now; the
                                lock itself is an flock(2) on this file, held for the whole run

``claim_run_dir(out_dir, resume, overwrite)`` decides what a training run may do with ``out_dir``
and returns the held ``RunLock``:

    missing, or empty            created, marker written (``resume``: an error, nothing to resume)
    a run, no flag               refused: a ValueError that names --resume and --overwrite
    a run, ``resume``            continued as it is
    a run, ``overwrite``         renamed to a sibling ``NAME.replaced-YYYYmmdd-HHMMSS`` (never
                                 deleted; one line on stderr says where), then a fresh run made
    a run in use                 refused, whatever the flags: the ValueError names the holder's pid
    anything else (not empty)    refused, whatever the flags: a directory myllm101 did not make is
                                 never trained into, moved aside or tidied

A *legacy run* (written before markers existed) counts as a run: no marker, but ``checkpoints/``
holds ``step_*`` directories and every other top-level name is one a run writes (``best``,
``metrics.jsonl``, the export, ...). Continuing it writes the marker.

The lock is released by ``RunLock.release()`` or, since the kernel drops an flock with its last
file descriptor, when the process dies however it dies: a lock file left by a dead process is
stale and simply reused. The file is never deleted (deleting it would let two processes lock two
different files of the same name). POSIX only: without ``fcntl`` there is no lock.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import socket
import sys
import uuid
from pathlib import Path

from myllm101.train.checkpoint import OLD_PREFIX, TMP_PREFIX

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

MARKER = "myllm101_run.json"
LOCK = ".myllm101-lock"
FORMAT, VERSION = "myllm101-run", 1

# top-level names a run writes (trainer, checkpoint.py): what a legacy run may hold besides
# checkpoints/; the temp names of today (checkpoint.TMP_PREFIX / OLD_PREFIX) and of older versions
RUN_NAMES = {"checkpoints", "best", "metrics.jsonl", "summary.json", "loss.png", "config.json",
             "model.safetensors", "myllm101_tokenizer.json", "manifest.json", LOCK}  # fmt: skip
_RUN_TEMP = re.compile(
    rf"({re.escape(TMP_PREFIX)}|{re.escape(OLD_PREFIX)}).*"
    r"|\.(tmp|old)-best-[0-9a-f]{8}"
    r"|\.(config\.json|model\.safetensors|myllm101_tokenizer\.json)\.tmp"
)


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def read_marker(path) -> dict | None:
    """The marker of run directory ``path``, or None (no marker, or not a myllm101 one)."""
    try:
        d = json.loads((Path(path) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and d.get("format") == FORMAT else None


def is_run_dir(path) -> bool:
    return Path(path).is_dir() and read_marker(path) is not None


def write_marker(path) -> dict:
    d = {"format": FORMAT, "version": VERSION, "created": _now(), "run_id": uuid.uuid4().hex}
    tmp = Path(path) / f"{TMP_PREFIX}{MARKER}"
    tmp.write_text(json.dumps(d, indent=2))
    os.replace(tmp, Path(path) / MARKER)
    return d


def _is_legacy_run(path: Path, names: set[str]) -> bool:
    ckpts = path / "checkpoints"
    if not ckpts.is_dir() or not any(
        p.is_dir() and p.name.startswith("step_") for p in ckpts.iterdir()
    ):
        return False
    return all(n in RUN_NAMES or _RUN_TEMP.fullmatch(n) for n in names)


def _kind(path: Path) -> str:
    """'missing' | 'empty' | 'run' | 'legacy' | 'foreign' (not empty, not ours) | 'file'."""
    if not path.exists() and not path.is_symlink():
        return "missing"
    if not path.is_dir():
        return "file"
    names = {p.name for p in path.iterdir()} - {LOCK}
    if all(n == MARKER or n.startswith(TMP_PREFIX) for n in names):
        # nothing but our own bookkeeping (a run that died before its first record, say)
        return "empty"
    if read_marker(path) is not None:
        return "run"
    return "legacy" if _is_legacy_run(path, names) else "foreign"


def _refuse(path: Path, kind: str) -> ValueError:
    if kind == "file":
        return ValueError(f"out_dir: {path} exists and is not a directory")
    return ValueError(
        f"out_dir: {path} is not empty and is not a myllm101 run directory (no {MARKER}); "
        "refusing to train into it (--resume and --overwrite too: a directory myllm101 did not "
        "make is never written into or moved); choose a new or empty out_dir"
    )


def _started(path: Path) -> str:
    m = read_marker(path)
    if m is not None:
        return f"started {m.get('created', '?')}"
    mtime = _dt.datetime.fromtimestamp(path.stat().st_mtime).astimezone()
    return f"from before run markers, last changed {mtime.isoformat(timespec='seconds')}"


def _existing(path: Path) -> ValueError:
    return ValueError(
        f"out_dir: {path} is an existing run ({_started(path)}); use --resume to continue it or "
        f"--overwrite to start over (the old run is moved to a sibling "
        f"{path.name}.replaced-YYYYmmdd-HHMMSS, not deleted)"
    )


def _aside(path: Path) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    cand, i = path.with_name(f"{path.name}.replaced-{stamp}"), 1
    while cand.exists() or cand.is_symlink():
        i += 1
        cand = path.with_name(f"{path.name}.replaced-{stamp}-{i}")
    return cand


class RunLock:
    """An exclusive, non-blocking flock on ``RUN_DIR/.myllm101-lock``, held until ``release()``
    (or the process's end). A held lock raises a ValueError naming its holder."""

    def __init__(self, run_dir):
        self.path = Path(run_dir)
        self.file = self.path / LOCK
        self._fd: int | None = None
        fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # EWOULDBLOCK: another open file description holds it
            holder = _read_holder(fd)
            os.close(fd)
            raise _in_use(self.path, holder) from None
        except BaseException:
            os.close(fd)
            raise
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        os.fsync(fd)
        self._fd, self.info = fd, info

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def _in_use(path: Path, holder: dict) -> ValueError:
    return ValueError(
        f"out_dir: {path} is in use by another training process (pid {holder.get('pid', '?')} "
        f"on host {holder.get('host', '?')}, since {holder.get('started', '?')}); wait for it "
        "to finish or choose another out_dir"
    )


def _check_not_in_use(path: Path) -> None:
    """Raise if a live process holds ``path``'s lock; a probe that changes nothing."""
    if fcntl is None:
        return
    try:
        fd = os.open(path / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise _in_use(path, _read_holder(fd)) from None
    finally:
        os.close(fd)  # (closing drops the probe's lock, if it got it)


def _read_holder(fd: int) -> dict:
    try:
        d = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):  # the holder has not written its details yet
        return {}
    return d if isinstance(d, dict) else {}


def claim_run_dir(out_dir, resume: bool = False, overwrite: bool = False) -> RunLock:
    """``out_dir`` made ready for a run as the module docstring says; returns its lock, held.
    Every check that matters is made again once the lock is held, and an existing run is only
    moved aside under its lock (never while another process trains in it)."""
    path = Path(out_dir)
    if resume and overwrite:
        raise ValueError("--resume and --overwrite: expected at most one of them")
    kind = _kind(path)
    if kind in ("file", "foreign"):  # refused before writing anything (not even the lock file)
        raise _refuse(path, kind)
    if kind in ("missing", "empty") and resume:
        state = "does not exist" if kind == "missing" else "is empty"
        raise ValueError(f"--resume: expected a checkpoint in {path / 'checkpoints'}, found none "
                         f"({path} {state})")  # fmt: skip
    if kind in ("run", "legacy") and not (resume or overwrite):
        _check_not_in_use(path)  # refused without writing a byte, the lock file included
        raise _existing(path)
    path.mkdir(parents=True, exist_ok=True)
    lock = RunLock(path)
    try:
        kind = _kind(path)  # again: it may have changed before we held the lock
        if kind in ("file", "foreign"):
            raise _refuse(path, kind)
        if kind == "empty":
            if resume:
                raise ValueError(f"--resume: expected a checkpoint in {path / 'checkpoints'}, "
                                 f"found none ({path} is empty)")  # fmt: skip
            write_marker(path)
            return lock
        if resume:
            if kind == "legacy":
                write_marker(path)
            return lock
        if not overwrite:
            raise _existing(path)
        aside = _aside(path)
        os.rename(path, aside)  # our lock (an open fd) moves with it: still held
        print(f"--overwrite: moved the old run {path} to {aside}", file=sys.stderr)
        try:
            path.mkdir()  # exists: someone made it meanwhile; theirs is left alone
            new = RunLock(path)
        except (FileExistsError, ValueError) as e:
            raise ValueError(f"--overwrite: the old run is safe in {aside}, but a new {path} "
                             f"could not be started: {e}") from None  # fmt: skip
        lock.release()
        lock = new
        write_marker(path)
        return lock
    except BaseException:
        lock.release()
        raise


def prepare_run_dir(out_dir, resume: bool = False, overwrite: bool = False) -> Path:
    """``claim_run_dir`` without keeping the lock: -> the run directory, ready. A trainer should
    use claim_run_dir and hold the lock while it writes."""
    lock = claim_run_dir(out_dir, resume, overwrite)
    lock.release()
    return lock.path
