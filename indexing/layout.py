"""Where collections live on disk, and the operations on whole collections.

<root>/<collection>/
    manifest.json       what made it (Manifest): checkpoint fingerprint, n_mem, d, ...
    meta.sqlite         documents, chunks, state(generation, memory_file, n_rows) -- WAL
    memory-<gen>.f16    append-only float16 rows (n_mem, d), read through np.memmap
    faiss-<gen>.index   FAISS over flattened, L2-normalised rows; <gen> = what it reflects
    writer.lock         flock held by the one writer process (holds its pid)
    partial/            chunks of long documents compressed so far (indexing.partial)
<root>/.recompress/<collection>           `rebuild --recompress`'s new copy, being built
<root>/.recompress/<collection>.complete   ... built: to swap in (`finish_swap`)
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from pathlib import Path

from clara.errors import CollectionNotFoundError, DamagedCollectionError, InvalidArgumentError
from clara.paths import COLLECTION_NAME, index_root, make_private_dirs, pid_alive
from indexing.durable import WriterLock, fsync_dir, fsync_file
from indexing.manifest import MANIFEST, Manifest, write_manifest
from indexing.meta import Meta

META = "meta.sqlite"
FAISS_FILE = re.compile(r"^faiss-(\d+)\.index$")
_NAME = re.compile(COLLECTION_NAME)
_LEFTOVER = re.compile(r"^\.(.+)\.(?:creating|deleted)-(\d+)-[0-9a-f]+$")
#: Where `clara-index rebuild --recompress` builds a collection's new copy
STAGING = ".recompress"


def memory_file_name(generation: int) -> str:
    return f"memory-{generation}.f16"


def faiss_file_name(generation: int) -> str:
    return f"faiss-{generation}.index"


def collection_dir(root: str | Path | None, name: str) -> Path:
    """`<root>/<name>` after checking the name; root None means `$CLARA_HOME/indexes`."""
    if not _NAME.fullmatch(name):
        raise InvalidArgumentError(
            f"collection name {name!r}: use letters, digits, '.', '_' or '-'"
        )
    return index_root(root) / name


def case_clash(root: str | Path | None, name: str) -> str | None:
    """The collection under `root` whose name is `name` in another case, if `name` itself is
    none: macOS's and Windows' file systems take one for the other (one folder), Linux's not."""
    try:
        if name in os.listdir(index_root(root)):  # (one listing: no manifest looked at)
            return None
        names = list_collections(root)
    except OSError:  # a root that may be entered but not listed: nothing to compare with
        return None
    return next((n for n in names if n.lower() == name.lower()), None)


def finish_swap(root: Path, name: str) -> None:
    """Finish swapping in a recompressed copy (`indexing.pipeline.recompress`) that a crash
    interrupted: its folder built and marked complete, the old one moved away, the new one
    not yet in its place (or in, its mark not yet removed). Everything that looks for a
    collection does this first: the collection seemed gone, adding to it made a new empty
    one, and a later recompress then dropped the copy's documents for good."""
    staging = root / STAGING
    marker = staging / f"{name}.complete"
    if not marker.exists():
        return
    try:
        if not (root / name).exists():
            os.rename(staging / name, root / name)
            fsync_dir(root)
        if not (staging / name).exists():
            marker.unlink(missing_ok=True)
            fsync_dir(staging)
            _sweep_leftovers(root, name)  # the old copy, if its process died before rmtree
    except OSError:  # another process finished it, or this one may not write here:
        pass  # (clara-index rebuild --recompress does it then)


def list_collections(root: str | Path | None = None) -> list[str]:
    """Names of the collections under `root` (default: `$CLARA_HOME/indexes`)."""
    base = index_root(root)
    if not base.is_dir():
        return []
    with contextlib.suppress(OSError):  # (a root that may be entered but not listed)
        for marker in (base / STAGING).glob("*.complete"):
            finish_swap(base, marker.name.removesuffix(".complete"))
    return sorted(
        p.name for p in base.iterdir() if _NAME.fullmatch(p.name) and (p / MANIFEST).exists()
    )


def delete_collection(root: str | Path | None, name: str, lock: WriterLock | None = None) -> None:
    """Delete a collection and its files; refuses while a writer has it open. `lock`: its
    writer lock, which the caller took (and this releases, whatever happens)."""
    directory = collection_dir(root, name)
    try:
        if not (directory / MANIFEST).exists():
            raise CollectionNotFoundError(f"no collection '{name}' in {directory.parent}")
        lock = lock or WriterLock(directory, f"collection '{name}'")
        doomed = directory.with_name(f".{name}.deleted-{os.getpid()}-{secrets.token_hex(4)}")
        os.rename(directory, doomed)  # gone from listings at once; rmtree may take a while
        fsync_dir(directory.parent)
        # a recompressed copy an interrupted run left (under the lock: no run is on now),
        # which `finish_swap` would otherwise bring back as the collection
        staging = directory.parent / STAGING
        (staging / f"{name}.complete").unlink(missing_ok=True)
        shutil.rmtree(staging / name, ignore_errors=True)
    finally:
        if lock is not None:
            lock.release()
    shutil.rmtree(doomed, ignore_errors=True)


def _sweep_leftovers(root: Path, name: str) -> None:
    """Remove hidden half-created / half-deleted folders of `name` whose process died."""
    for p in root.glob(f".{name}.*-*-*"):
        m = _LEFTOVER.match(p.name)
        if m and m.group(1) == name and p.is_dir() and not pid_alive(int(m.group(2))):
            shutil.rmtree(p, ignore_errors=True)


def create_collection_dir(directory: Path, manifest: Manifest) -> None:
    """Build an empty collection in a hidden folder, then rename it into place (atomic)."""
    make_private_dirs(directory.parent)
    _sweep_leftovers(directory.parent, directory.name)
    tmp = directory.with_name(f".{directory.name}.creating-{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir(mode=0o700)  # (its documents' text: this user's only, whatever the root's mode)
    try:
        write_manifest(tmp, manifest)
        memory = memory_file_name(0)
        Meta.create(tmp / META, memory)
        (tmp / memory).touch()
        for file in (META, memory):
            fsync_file(tmp / file)
        fsync_dir(tmp)
        try:
            os.rename(tmp, directory)
        except OSError:
            if not (directory / MANIFEST).exists():
                raise
            # another process created it first: use theirs
        fsync_dir(directory.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def holds_data_without_manifest(directory: Path) -> bool:
    """Whether `directory` holds a collection's data (its database or memory vectors) but no
    manifest. A collection comes into place whole by one rename and leaves by one, so such a
    folder is a damaged collection, not a free name: a new one must not be started over it."""
    if (directory / MANIFEST).exists() or not directory.is_dir():
        return False
    return (directory / META).exists() or any(directory.glob("memory-*.f16"))


def damaged(directory: Path, what: str) -> DamagedCollectionError:
    """The error for a collection whose files cannot be read, saying what a user can do."""
    return DamagedCollectionError(
        f"collection '{directory.name}' in {directory.parent} is damaged ({what}): restore its "
        "folder from a backup, or move the folder away and index its documents again"
    )
