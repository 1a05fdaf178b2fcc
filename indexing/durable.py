"""Durability primitives for the index: fsync'd atomic writes, the writer lock, crash hooks.

Crash testing: set `CLARA_CRASH_AT=<step>` and the process kills itself with SIGKILL when it
reaches `crash_point(<step>)` (no cleanup, no atexit; like a power cut for everything not
yet fsync'd). The steps, in the order a write goes through them:

  add:before-append  add:mid-append  add:after-append  add:before-commit  add:after-commit
  remove:before-commit  remove:after-commit
  compact:after-write  compact:after-commit
  faiss:after-temp  faiss:after-replace

`tests/test_store.py` runs a writer subprocess at each step and checks what survives.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import sqlite3
from pathlib import Path
from typing import ClassVar

from clara.errors import CollectionLockedError

CRASH_ENV = "CLARA_CRASH_AT"


def crash_point(step: str) -> None:
    """Die here, uncleanly, when `CLARA_CRASH_AT` names this step (crash tests only)."""
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


#: macOS only: fsync there leaves the data in the drive's cache (Apple's fsync(2)).
#: `CLARA_FULLFSYNC=off` trades that for speed (each flush of the drive's cache takes
#: milliseconds: a power cut may then lose the last writes).
FULLFSYNC: int | None = (
    None
    if os.environ.get("CLARA_FULLFSYNC", "").lower() in ("off", "0", "no", "false")
    else getattr(fcntl, "F_FULLFSYNC", None)
)


def sync(fd: int) -> None:
    """fsync `fd`: what was written is on the disk. F_FULLFSYNC where there is one (macOS), as
    SQLite's `PRAGMA fullfsync` does; a file system without it (SMB, some USB disks) gets
    plain fsync."""
    if FULLFSYNC is not None:
        try:
            fcntl.fcntl(fd, FULLFSYNC)
            return
        except OSError:
            pass
    os.fsync(fd)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (created, renamed, deleted files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        sync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `path` so that readers see either the old content or the new, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        sync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def remove_quietly(path: Path) -> bool:
    """Delete a file if it is there; True when something was deleted."""
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def empty_wal(db: sqlite3.Connection, wait_ms: int) -> bool:
    """Copy a WAL-mode database's log into it and empty the log (after deletions: it held
    the deleted text until a later checkpoint), waiting at most `wait_ms` for readers of
    older states (a server mid-search); whether it was emptied."""
    before = db.execute("PRAGMA busy_timeout").fetchone()[0]
    db.execute(f"PRAGMA busy_timeout={int(wait_ms)}")
    try:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        db.execute(f"PRAGMA busy_timeout={int(before)}")
    return busy == 0


def held_elsewhere(directory: Path) -> bool:
    """Whether another open of `<dir>/writer.lock` (another process's `WriterLock`, or another
    of this process's) holds it now; a folder without one is not held."""
    try:
        fd = os.open(directory / "writer.lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:  # a filesystem without flock: not "held", the writer will say why
        return e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)
    finally:
        os.close(fd)  # closing releases a lock it took
    return False


def writer_pid(directory: Path) -> str | None:
    """The pid the holder of `<dir>/writer.lock` wrote there, if any."""
    try:
        return (directory / "writer.lock").read_text(errors="replace").strip() or None
    except OSError:
        return None


class WriterLock:
    """An exclusive `fcntl.flock` on `<dir>/writer.lock`, released on close or process death.

    The file holds the owner's pid so a second writer can say who is in the way.
    """

    #: (device, inode) of the lock files this process holds: a second writer here is told
    #: so (pids do not tell: in containers every service is pid 1)
    held: ClassVar[set[tuple[int, int]]] = set()

    def __init__(self, directory: Path, what: str):
        self.path = directory / "writer.lock"
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        st = os.fstat(self._fd)
        self._key = (st.st_dev, st.st_ino)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            pid = writer_pid(directory) or "?"
            os.close(self._fd)
            self._fd = None
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            if self._key in WriterLock.held:
                raise CollectionLockedError(
                    f"{what} is already open for writing in this process: close() that "
                    "collection first (`with Collection.open(...)` closes it)",
                    here=True,
                ) from None
            raise CollectionLockedError(
                f"{what} is being written by pid {pid}; wait for it to finish "
                "(or stop that process) and try again"
            ) from None
        WriterLock.held.add(self._key)
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            WriterLock.held.discard(self._key)

    def __del__(self) -> None:  # a writer dropped without close(): its lock goes with it
        with contextlib.suppress(Exception):
            self.release()
