"""Where clara keeps its data: `CLARA_HOME` (default `~/.cache/clara`)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from clara.text import printable

# a collection (vector store) name: also its folder under the index root, so no separators
# (Python: `re.fullmatch`, as `$` alone lets a final newline through; pydantic: `pattern=`)
MAX_COLLECTION_NAME = 128  # characters
COLLECTION_NAME = rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_COLLECTION_NAME - 1}}}$"
#: the same but for its length: a name only too long is told so, not which characters to use
COLLECTION_NAME_ANY_LENGTH = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
DEFAULT_COLLECTION = "default"  # what `clara-index` and `clara-serve` use unless told
UPLOADS = "uploads"  # <index root>/uploads/: the Files API's files (<file_id>/<name>), registry
RESERVED_NAMES = frozenset({UPLOADS})  # folders of the index root that are not collections


def is_reserved(name: str) -> bool:
    """Whether `name` is a folder of the index root that is no collection, in any case (macOS's
    and Windows' file systems take `Uploads` for `uploads`)."""
    return name.lower() in RESERVED_NAMES


def upload_file_id(root: str | os.PathLike, path: str | None) -> str | None:
    """The Files API id of a document indexed from `<root>/uploads/<file_id>/<name>`; None for
    any other path (documents `clara-index add` indexed from the user's own files). A path
    under another root's `uploads/file-<24 hex>/<name>` counts too when this root holds that
    upload under the same name: documents keep the absolute path they were indexed from,
    which names the old place once `CLARA_HOME` has moved. (A user's file in a folder that
    only looks like an uploads folder, under another name, was taken for the upload: a
    security audit. The Files API's listings and deletes also compare size and content.)"""
    if not path:
        return None
    p = Path(path)
    if p.parent.parent == Path(root) / UPLOADS:
        return p.parent.name
    moved = p.parent.parent.name == UPLOADS and _FILE_ID.fullmatch(p.parent.name)
    here = Path(root) / UPLOADS / p.parent.name / p.name
    return p.parent.name if moved and here.is_file() else None


_FILE_ID = re.compile(r"file-[0-9a-f]{24}")


def path_text(path: str | os.PathLike) -> str:
    """`path` as text any UTF-8 consumer takes (SQLite, JSON, a terminal). A file name that
    is not valid UTF-8 (from an old archive or a Latin-1 disk) reaches Python with its bad
    bytes as lone surrogates; they become `\\xNN` escapes here, the same for the same name."""
    return os.fspath(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def path_bytes(text: str) -> bytes:
    """The file name `path_text` wrote, as the bytes it stands for: its `\\xNN` escapes
    back to their bytes (a name that held a backslash, an x and two hex digits itself reads
    as that byte: such names are rare)."""
    raw = text.encode("utf-8", "surrogateescape")
    return _ESCAPED.sub(lambda m: bytes([int(m[1], 16)]), raw)


_ESCAPED = re.compile(rb"\\x([89a-f][0-9a-f])")  # (`path_text` escapes bytes 0x80-0xff only)


def home() -> Path:
    """The data home: converted models, checkpoints, indexes."""
    return Path(os.environ.get("CLARA_HOME") or Path.home() / ".cache" / "clara").expanduser()


def models_dir() -> Path:
    return home() / "models"


def indexes_dir() -> Path:
    return home() / "indexes"


def make_private_dirs(path: Path) -> None:
    """`mkdir -p path`, the folders it makes readable by this user only (0700): the index
    root, the uploads and `CLARA_HOME` hold people's documents and conversations, which the
    process umask (often 022) left readable by every user of the machine. Folders that
    exist keep their modes."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:  # (made meanwhile by another process)
            pass


def index_root(root: str | os.PathLike | None = None) -> Path:
    """An index root given by the user (`--index DIR`), or the default under CLARA_HOME;
    absolute, so paths stored under it (uploads) still name it from another directory. A
    file there is an `InvalidArgumentError` (a CLI audit: `--index notes.txt` was told to
    index documents first, and indexing then failed with "File exists")."""
    path = Path(os.path.abspath(Path(root).expanduser())) if root else indexes_dir()
    if path.exists() and not path.is_dir():
        from clara.errors import InvalidArgumentError

        raise InvalidArgumentError(
            f"the index folder {show_path(path)} is a file: give --index the folder that "
            "holds (or will hold) the collections"
        )
    return path


def file_sha256(path: str | os.PathLike) -> str | None:
    """Hash of a file's bytes (what indexing records of a document, and training of its
    data), or None if it can't be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def show_path(path: str | os.PathLike | None) -> str:
    """`path` for a terminal: relative to the working folder when under it, "-" for none, its
    control and text-direction characters as escapes."""
    if path is None:
        return "-"
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return printable(path_text(path))
    return printable(path_text(rel if not rel.startswith("..") else path))


def hold_owner_lock(path: Path) -> int:
    """Lock the file `path` for as long as this process keeps the descriptor returned: the
    sign that an owner (a service, a writer of stored responses) runs, which pids do not
    give (in two containers both processes are pid 1). Locked before it takes its name:
    another process looking at it in between would find it unlocked, and think it stopped."""
    path.parent.mkdir(exist_ok=True)
    made = path.with_name(f".{path.name}.new")
    fd = os.open(made, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # (a file system without locks: its owner then looks stopped to others)
        pass
    os.replace(made, path)
    return fd


def owner_running(path: Path) -> bool:
    """Whether the owner of the lock file `path` (`hold_owner_lock`) still runs; a stopped
    one's file is removed."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(path)
    return False


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


#: A folder `temp_sibling` made: `.<name>.<pid>-<random><suffix>`
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[^.]+(?P<suffix>\.\w+)?$")
#: Temp folders named before they carried their pid are swept once this old (seconds)
UNNAMED_TEMP_S = 24 * 3600


def temp_sibling(target: Path, suffix: str = ".tmp") -> Path:
    """A new hidden folder beside `target` to build it in, then rename into place: a crash
    cannot leave half of it at `target`. Its name holds this process's id, and those that
    dead processes left beside `target` are removed first (a model's conversion killed
    three times left three copies of ~100 MB; a 7B import would leave gigabytes)."""
    make_private_dirs(target.parent)  # (the first folder under a new CLARA_HOME: its mode)
    sweep_temps(target, suffix)
    prefix = f".{target.name}.{os.getpid()}-"
    return Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=target.parent))


def sweep_temps(target: Path, suffix: str = ".tmp") -> None:
    """Remove the `temp_sibling` folders beside `target` that dead processes left (and those
    named before they carried a pid, once a day old)."""
    if not target.parent.is_dir():
        return
    for old in target.parent.glob(f".{glob.escape(target.name)}.*{suffix}"):
        m = _TEMP.match(old.name)
        try:
            if m is not None and m["name"] == target.name and m["suffix"] == suffix:
                stale = not pid_alive(int(m["pid"]))
            else:  # named before they carried their pid (mkdtemp's 8 characters): a day old
                unnamed = rf"\.{re.escape(target.name)}\.[a-z0-9_]{{8}}{re.escape(suffix)}"
                stale = bool(re.fullmatch(unnamed, old.name)) and (
                    time.time() - old.stat().st_mtime > UNNAMED_TEMP_S
                )
        except (OSError, OverflowError):  # swept by another run meanwhile; no such pid
            stale = False
        if stale and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)


def disk_full(folder: Path | str) -> bool:
    """Whether the writable file system holding `folder` has less than 1 MiB left for this
    user: asked once a write failed, to tell why (SQLite fails with an I/O error, not "full",
    when its -shm or WAL cannot grow into the last few blocks). Read-only ones, squashfs or a
    CD, say none free: they are not full."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 1 << 20 and not st.f_flag & os.ST_RDONLY


def sqlite_error(exc: Exception, folder: Path | str) -> Exception:
    """An sqlite3 error opening or writing a database in `folder`, as the OSError it is when
    the disk is full (SQLITE_FULL on a write; an I/O error making its -shm file on a disk
    with no block left) or read-only. Those were tracebacks (an operator's audit); the
    OSError is one line saying what to do. Other errors are returned as they are. The one
    rule of a full disk: the library's errors and the HTTP `storage_error` both ask it."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name == "SQLITE_FULL" or disk_full(folder):
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only or name == "SQLITE_READONLY":
        return OSError(errno.EROFS, os.strerror(errno.EROFS), str(folder))
    return exc
