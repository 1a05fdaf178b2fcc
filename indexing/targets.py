"""Which stored documents a command-line target names: an id, a file or folder path, a glob
(matched as `add` expanded it), or the end of a stored path; and what is near when none."""

from __future__ import annotations

import difflib
import fnmatch
import os
import unicodedata
from pathlib import Path

from clara.errors import ClaraError
from clara.paths import path_text, show_path
from indexing.readers import GLOB_CHARS, is_folder, is_hidden, iter_inputs
from indexing.store import Collection, Document


def find_documents(
    col: Collection, target: str, patterns: bool = False, remove: bool = False, forms: bool = True
) -> list[Document]:
    """Documents named by an id, a file path, or a folder (everything under it); with
    `patterns`, also a glob the shell left as it was (files deleted since they were indexed,
    or a quoted pattern), matched as `add` expands it (`_glob_docs`), or against document
    names for a pattern without a folder. A relative path that names no stored path as given
    falls back to the stored paths that end with it (`_by_tail`): one, or an error naming them."""
    doc = col.document(path_text(target))  # an id (argv may hold any bytes)
    if doc is not None:
        return [doc]
    path = Path(target).expanduser().resolve()
    doc = col.find_by_path(str(path))
    if doc is not None:
        return [doc]
    docs = col.list_documents()
    prefix = path_text(path).rstrip(os.sep) + os.sep
    walked = _walked(target) if is_folder(path) or patterns else set()
    found = [d for d in docs if d.path and (d.path.startswith(prefix) or d.path in walked)]
    if patterns and GLOB_CHARS.search(target):  # also what was deleted since, or elsewhere
        ids = {d.id for d in found}
        return found + [d for d in _glob_docs(docs, target) if d.id not in ids]
    found = found or _by_tail(docs, target, remove)
    if not found and forms:  # macOS stores names decomposed ("한" as three jamo), keyboards
        for form in ("NFC", "NFD"):  # type them composed: the same name in the other form
            other = unicodedata.normalize(form, target)
            if other != target and (found := find_documents(col, other, patterns, remove, False)):
                break
    return found


def _walked(target: str) -> set[str]:
    """The files `add target` would read now, as stored: links (to folders too) followed to
    the real path a document is stored under, which the folder or glob named does not show."""
    try:
        files = iter_inputs([target], unreadable=[])  # (what may not be read: not indexed)
    except (ClaraError, OSError):
        return set()
    return {str(p) for p in files} | {path_text(p) for p in files}


def _glob_docs(docs: list[Document], target: str) -> list[Document]:
    """The documents `add` with glob `target` indexed: `glob.glob(target, recursive=True)`
    matches files and folders, and a folder it matches is walked whole except hidden files
    and folders (`readers.iter_inputs`). So 'dir/*' is everything under dir, 'dir/*/' (a
    trailing '/': folders only) everything in its subfolders. A pattern without a folder
    ('*.md') matches document names instead, uploads (which have no path) included."""
    if os.sep not in target:
        return [d for d in docs if fnmatch.fnmatchcase(d.name, target)]
    folders_only = target.endswith(os.sep)
    parts = Path(target).expanduser().parts
    fixed = next(i for i, part in enumerate(parts) if GLOB_CHARS.search(part))
    # the folders before the first wildcard resolved as indexed paths are (links, `..`)
    pattern = Path(*parts[:fixed]).resolve().parts + parts[fixed:]
    found = []
    for d in docs:
        if not d.path:
            continue
        path = Path(d.path).parts
        if not folders_only and _glob_match(path, pattern):
            found.append(d)
            continue
        for depth in range(len(path) - 1, 0, -1):  # the folders holding it, deepest first
            if any(is_hidden(part) for part in path[depth:]):
                break  # a hidden file or folder under a matched folder: walked past
            if _glob_match(path[:depth], pattern):
                found.append(d)
                break
    return found


def _glob_match(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Whether path components match glob components: `*`, `?`, `[...]` within one component
    and, as in `glob`, not a name starting with '.' unless the pattern's does; `**` alone any
    number of folders but hidden ones (as `add` expands globs: `'notes/**/*.md'`)."""
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        for i in range(len(parts) + 1):
            if _glob_match(parts[i:], rest):
                return True
            if i < len(parts) and parts[i].startswith("."):
                return False  # `glob`'s '**' does not enter hidden folders
        return False
    return (
        bool(parts)
        and fnmatch.fnmatchcase(parts[0], head)
        and (head.startswith(".") or not parts[0].startswith("."))
        and _glob_match(parts[1:], rest)
    )


def _by_tail(docs: list[Document], target: str, remove: bool = False) -> list[Document]:
    """For a relative path that no stored path is: the document stored at a path ending with
    it ('notes.txt' -> '/any/where/notes.txt') or an upload of that name; with a trailing '/',
    every document under the one folder ending with it ('notes/' -> '/any/where/notes/...').
    Only when one file or folder matches: several raise ClaraError naming them, since a
    remove must not guess. [] when none matches (`not_found_hint` then says what is near).
    For a `remove`, a target that names a place of its own (written from here, './notes.txt',
    or a file or folder that exists here, not indexed) never stands for a stored path ending
    with it: a ClaraError says which stored path to name instead."""
    tail = Path(target).parts
    if not tail or Path(target).expanduser().is_absolute() or ".." in tail:
        return []
    here = target.startswith(("." + os.sep, ".." + os.sep)) or os.path.lexists(target)
    folders_only = target.endswith(os.sep)
    places: dict[str, list[Document]] = {}  # a matching stored file or folder -> its documents
    for d in docs:
        if d.path is None:
            if not folders_only and d.name == target:
                places.setdefault(f"{d.name} ({d.id})", []).append(d)
            continue
        parts = Path(d.path).parts
        if not folders_only:
            if parts[-len(tail) :] == tail:
                places.setdefault(d.path, []).append(d)
            continue
        for end in range(len(parts) - 1, len(tail) - 1, -1):  # its folders, deepest first
            if parts[end - len(tail) : end] == tail:
                places.setdefault(str(Path(*parts[:end])), []).append(d)
                break
    if remove and here and (stored := sorted(p for p, ds in places.items() if ds[0].path)):
        what = "folder" if folders_only or os.path.isdir(target) else "file"
        raise ClaraError(
            f"{target}: the {what} here is not indexed; the stored "
            f"{'paths' if len(stored) > 1 else 'path'} ending with it: "
            f"{', '.join(stored[:5])}; give the full path to remove it"
        )
    if len(places) > 1:
        names = sorted(places)
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        raise ClaraError(
            f"{target}: {len(names)} stored paths end with it: {', '.join(names[:5])}{more}; "
            "give the full path (or the document id: clara-index list)"
        )
    return next(iter(places.values()), [])


def not_found_hint(docs: list[Document], target: str) -> str:
    """What is near a target that matched nothing: the folder it names when it lacks its
    trailing '/', else stored paths (or upload names) whose file name is close to its own."""
    if not target.endswith(os.sep) and not GLOB_CHARS.search(target):
        try:
            under = _by_tail(docs, target + os.sep)
        except ClaraError:
            under = [None]  # several folders: it names a folder all the same
        if under:
            return f"; '{target}{os.sep}' (with the '/') names the folder: every document under it"
    by_name: dict[str, list[str]] = {}
    for d in docs:
        by_name.setdefault(Path(d.path).name if d.path else d.name, []).append(d.path or d.name)
    close = difflib.get_close_matches(Path(target).name, list(by_name), n=3, cutoff=0.6)
    paths = [show_path(where) for name in close for where in by_name[name]][:3]
    return f"; close: {', '.join(paths)}" if paths else ""
