"""The `clara-index` commands: each takes the parsed arguments and returns an exit status.

Only `add`, `search` and `rebuild --recompress` load the model; the rest read the index alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clara.errors import (
    ClaraError,
    CollectionLockedError,
    DamagedCollectionError,
    DocumentError,
    MissingFileError,
)
from clara.paths import (
    DEFAULT_COLLECTION,
    index_root,
    path_text,
    show_path,
    upload_file_id,
)
from clara.settings import ModelSettings
from clara.text import pages_label, printable, scaled, snippet
from clara_cli.common import (
    EXIT_ERROR,
    EXIT_LOCKED,
    EXIT_PARTIAL,
    Terminated,
    model_dtype,
    os_error_text,
    progress_bar,
)
from indexing.durable import writer_pid
from indexing.ignore import DEPENDENCY_FOLDERS
from indexing.layout import collection_dir
from indexing.pipeline import (
    DEFAULT_OVERLAP,
    FileResult,
    Indexer,
    IndexOptions,
    Progress,
    chunk_limits,
    chunk_limits_for,
    file_gone,
    known_result,
    model_manifest,
    preflight,
)
from indexing.readers import SUPPORTED_EXTENSIONS, is_folder, iter_inputs
from indexing.service.state import store_makers, store_names
from indexing.store import (
    Collection,
    CollectionNotFoundError,
    Document,
    Manifest,
    list_collections,
)
from indexing.targets import find_documents, not_found_hint

PROG = "clara-index"
SNIPPET = 160


# ---- helpers -------------------------------------------------------------------------------
def _root(args: argparse.Namespace) -> Path:
    return index_root(args.index).resolve()


def _load_model(args: argparse.Namespace, compressing: bool = True):
    """The model with its packed weights: the base weights for query encodings, and for
    commands that compress (`compressing`) the compressor merged into them too."""
    settings = ModelSettings(
        model=args.model,
        checkpoint=args.checkpoint,
        dtype=model_dtype(args),
        query_precision=getattr(args, "query_precision", "float32"),  # search only
        pack_compressor=compressing,
    )
    return settings.load(warn=lambda note: print(f"{PROG}: warning: {note}", file=sys.stderr))


def _size(n: int) -> str:
    return scaled(n, ("B", "KB", "MB", "GB"), 1024, " ")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _pages(name: str, start: int | None, end: int | None, before: str = "") -> str:
    """`before` + "p. 3" / "pp. 3-4" (a presentation's: "slide 3"); "" without pages."""
    where = pages_label(name, start, end)
    return before + where if where else ""


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def _doc_dict(d: Document) -> dict[str, Any]:
    return {
        "id": d.id,
        "path": d.path,
        "name": d.name,
        "chunks": d.n_chunks,
        "pages": d.n_pages,
        "bytes": d.size,
        "sha256": d.sha256,
        "added": d.created,
    }


def _open(*args: Any, **kwargs: Any) -> Collection:
    """Collection.open, printing its one-line notes (e.g. an old index upgraded)."""
    col = Collection.open(*args, **kwargs)
    for note in col.notes:
        print(f"{PROG}: {note}", file=sys.stderr)
    return col


def _open_read(args: argparse.Namespace) -> Collection:
    return _open(args.index, args.collection, readonly=True)


# ---- commands ------------------------------------------------------------------------------
LEFT_OUT_SHOWN = 5  # paths named by the notice of what .gitignore files left out


def _expand(
    raw_paths: list[str], exclude: list[str] | None = None, ignore_files: bool = True
) -> tuple[list[Path], list[FileResult], list[tuple[Path, str]]]:
    """Each argument on its own, so one bad path does not stop the others. Says which files
    the folders held that are not read (other types, dangling links) and what `.gitignore`
    files and dependency folders left out; returns what was left out, and why, too."""
    found: dict[Path, None] = {}
    failed = []
    skipped: list[Path] = []
    left_out: list[tuple[Path, str]] = []
    for raw in raw_paths:
        unreadable: list[DocumentError] = []
        try:
            files = iter_inputs(
                [raw],
                skipped=skipped,
                unreadable=unreadable,
                exclude=exclude or (),
                ignore_files=ignore_files,
                left_out=left_out,
            )
            if not files and not unreadable and is_folder(Path(raw).expanduser()):
                print(f"{PROG}: {raw}: no file in it that clara reads", file=sys.stderr)
            found.update(dict.fromkeys(files))
        except DocumentError as exc:
            failed.append(FileResult(Path(raw), "failed", error=exc))
        failed += [FileResult(e.path, "failed", error=e) for e in unreadable]
    if skipped:
        print(
            f"{PROG}: {skipped_summary(skipped)}; name one to read it as text or hear why "
            "it cannot be",
            file=sys.stderr,
        )
    ignored = [p for p, why in left_out if why == "ignore"]
    if ignored:
        folders = sum(map(is_folder, ignored))
        said = [f"{n} {w}{'s' * (n != 1)}" for n, w in
                ((len(ignored) - folders, "file"), (folders, "folder")) if n]  # fmt: skip
        shown = [show_path(p) for p in sorted(ignored)[:LEFT_OUT_SHOWN]]
        if len(ignored) > LEFT_OUT_SHOWN:
            shown.append(f"{len(ignored) - LEFT_OUT_SHOWN} more")
        print(
            f"{PROG}: left out {' and '.join(said)} that .gitignore files name or that are "
            f"dependency folders ({', '.join(sorted(DEPENDENCY_FOLDERS))}): "
            f"{', '.join(shown)}; --no-ignore reads them",
            file=sys.stderr,
        )
    return list(found), failed, left_out


def skipped_summary(skipped: list[Path], most: int = 6) -> str:
    """What the folders held that is not read, by kind: other types by extension, broken
    links and other things that are not files apart (a dangling link was "1 .txt")."""

    def kind(p: Path) -> str:
        suffix = p.suffix.lower() or "no extension"
        if suffix not in SUPPORTED_EXTENSIONS:  # skipped by its name: no look at the disk
            return suffix  # (a NAS folder of 100k photos: no 100k stats)
        try:  # a type clara reads, skipped: a broken link, a pipe
            if p.is_symlink() and not p.exists():
                return "broken link"
            if p.exists() and not p.is_file() and not p.is_dir():
                return "not a regular file"
        except OSError:  # (a folder that may be listed but not searched)
            pass
        return suffix

    kinds = Counter(kind(p) for p in skipped)
    shown = kinds.most_common(most)
    listed = ", ".join(f"{n} {k}" for k, n in shown)
    if rest := len(skipped) - sum(n for _, n in shown):
        listed += f", {rest} of {len(kinds) - len(shown)} other kind{'s' * (len(kinds) > most + 1)}"
    other = "" if {"broken link", "not a regular file"} >= set(kinds) else (
        " (clara reads PDF, Word, OpenDocument text, EPUB, PowerPoint, Excel, Markdown, HTML and "
        "text)"
    )  # fmt: skip
    return f"skipped {len(skipped)} file{'s' * (len(skipped) != 1)} in folders: {listed}{other}"


def cmd_add(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if args.chunk_tokens is not None:  # what is known without the model, before it loads
        chunk_limits_for(args.chunk_tokens, args.chunk_tokens, args.overlap)
    paths, results, left_out = _expand(args.paths, args.exclude, not args.no_ignore)
    for r in results:
        print(f"{PROG}: {_error_line(r.error)}", file=sys.stderr)
    _say_where_gone_went(args, [r.path for r in results if isinstance(r.error, MissingFileError)])
    run = _AddRun(start, results, left_paths=left_out)
    try:
        _add(args, paths, run)
    except KeyboardInterrupt as stop:  # --json still reports what this run did (if anything)
        if args.json:
            _print_json(run.report(args, stopped=_stop_name(stop)))
        raise
    except OSError as exc:  # a full disk half-way: the files indexed before it stay (exit 3,
        # not 1, which says none was; an operator's audit)
        if not any(r.status in ("added", "replaced") for r in run.results):
            raise
        print(f"{PROG}: error: {os_error_text(exc)}", file=sys.stderr)
        if args.json:
            _print_json({**run.report(args), "error": os_error_text(exc)})
        return EXIT_PARTIAL
    report = run.report(args)
    if args.json:
        _print_json(report)
    else:
        _say_pruned(args, run.gone, "files no longer there ({})")
        # (an --exclude or a .gitignore line added since: a secret stayed found)
        _say_pruned(args, run.left, "files this run left out (--exclude, .gitignore, "
                    "dependency folders: {})")  # fmt: skip
        counts = {s: report[s] for s in (*_KINDS, "failed")}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n or s == "added")
        loaded = f", model load {run.load_s:.1f}s" if run.load_s else ""
        chunks = report["chunks"]
        noun = "chunk" if chunks == 1 else "chunks"
        print(
            f"{summary}: {chunks} {noun} in {report['seconds']:.1f}s "
            f"({report['chunks_per_s']:.1f} chunks/s{loaded})"
        )
    if not report["failed"]:
        return 0
    return EXIT_PARTIAL if any(report[s] for s in _KINDS) else EXIT_ERROR  # (the others indexed)


def _say_pruned(args: argparse.Namespace, docs: list[Any], where: str) -> None:
    """That `docs` were indexed from `where` (files gone, or left out: "{}" is their names),
    and removed by --prune or still searched."""
    if not docs:
        return
    names = ", ".join(show_path(d.path) for d in docs[:5])
    more = f" and {len(docs) - 5} more" if len(docs) > 5 else ""
    n = f"{len(docs)} document{'s' * (len(docs) != 1)}"
    print(
        f"{PROG}: {n} {'were' if len(docs) != 1 else 'was'} indexed from "
        + where.format(names + more)
        + ": "
        + ("removed" if args.prune else "still searched; add --prune to remove them"),
        file=sys.stderr,
    )


def _where_flags(args: argparse.Namespace) -> str:
    """--index and --collection as a command must be given them to act where this one did."""
    return "".join(
        f" {flag} {shlex.quote(str(value))}"
        for flag, value, default in (
            ("--index", args.index, None), ("--collection", args.collection, DEFAULT_COLLECTION)
        )
        if value != default
    )  # fmt: skip


def _say_where_gone_went(args: argparse.Namespace, missing: list[Path]) -> None:
    """For each path that is not there but documents were indexed from (a folder moved or
    renamed: `add NEW` indexed it all again, and `add OLD --prune` only said to check the
    path), how to remove them."""
    if not missing or args.collection not in list_collections(args.index):
        return
    try:
        with Collection.open(args.index, args.collection, readonly=True, vectors=False) as col:
            # absolute: a relative path would match stored paths ending with it elsewhere
            wheres = [str(Path(p).expanduser().absolute()) for p in missing]
            found = [(w, len(find_documents(col, w, remove=True))) for w in wheres]
    except (ClaraError, OSError):
        return  # (the run says what is wrong with the collection)
    flags = _where_flags(args)
    for where, n in found:
        if n:
            print(
                f"{PROG}: {_n(n, 'document')} in {args.collection!r} {'was' if n == 1 else 'were'}"
                f" indexed from {show_path(where)}, which is gone (moved?): `{PROG} remove "
                f"{shlex.quote(where)}{flags}` removes {'it' if n == 1 else 'them'}",
                file=sys.stderr,
            )


def _add(args: argparse.Namespace, paths: list[Path], run: _AddRun) -> None:
    """`cmd_add`'s work, into `run`: the files not indexed as they are, compressed."""
    try:  # the writer lock first: another writer would make us wait for nothing
        col = _open_writer(args, index_type=args.index_type)
    except CollectionNotFoundError:
        col = None
    try:
        touched: list = []  # (files unchanged but for their time: recorded in one write)
        known = (
            {p: known_result(col, p, touched=touched, reread=args.reread) for p in paths}
            if col is not None
            else {}
        )
        if col is not None:
            col.note_file_stats(touched)
        todo = [p for p in paths if known.get(p) is None]
        doomed: dict[Path, FileResult] = {}
        for p in todo:  # stops at the first file that needs the model to tell
            if (failure := preflight(p, args.password)) is None:
                break
            doomed[p] = failure
        else:  # every file left fails (empty, blank, binary): no model load for nothing
            known.update(doomed)
            todo = []
        if todo:  # the model loads only when something has to be compressed
            loading = time.perf_counter()
            cm = _load_model(args)
            run.load_s = time.perf_counter() - loading
            manifest = model_manifest(cm, args.checkpoint)
            chunk_limits(cm, args.chunk_tokens, args.overlap)  # bad options create nothing
            if col is None:
                col = _open_writer(args, manifest, create=True, index_type=args.index_type)
            else:
                col.manifest.check_matches(Manifest.from_dict(manifest), args.collection)
            options = IndexOptions(
                args.chunk_tokens, args.overlap, args.batch_size, args.password,
                reread=args.reread,
            )  # fmt: skip
            # (a scanned PDF is not read twice; its failure comes in its place; a file found
            # moved is that, not "unchanged" once the move is made)
            moved = {p: r for p, r in known.items() if r is not None and r.status == "moved"}
            events = Indexer(cm, col, options).run(
                doomed.get(p) or moved.get(p) or p for p in paths
            )
            events = _in_given_order(events, paths)
        else:
            _check_model_args(args, col)  # a bad --checkpoint is an error even with nothing to do
            events = (known[p] for p in paths)  # unchanged, duplicates, unreadable: no model
        _run_add(args, events, len(paths), run)
        run.gone = _gone(col, args.paths) if col is not None else []
        run.left = _left_out(col, run.left_paths) if col is not None else []
        if args.prune:
            col.remove_documents([d.id for d in run.gone + run.left])
    finally:
        if col is not None:
            col.close()


_KINDS = ("added", "replaced", "unchanged", "duplicate", "moved")


@dataclass
class _AddRun:
    """What one `add` (or `rebuild --recompress`) did, for its summary line or --json report;
    filled in as it goes, so a run Ctrl-C stops still reports what it did."""

    start: float
    results: list[FileResult] = field(default_factory=list)
    load_s: float = 0.0
    compressed: int = 0  # chunks this run compressed (not those an earlier run had)
    compress_s: float = 0.0  # time spent on the files (no model load, no --wait)
    gone: list[Any] = field(default_factory=list)
    left_paths: list[tuple[Path, str]] = field(default_factory=list)  # what the walk left out
    left: list[Any] = field(default_factory=list)  # documents indexed from those

    def report(self, args: argparse.Namespace, stopped: str | None = None) -> dict[str, Any]:
        seconds = time.perf_counter() - self.start
        counts = {s: sum(r.status == s for r in self.results) for s in (*_KINDS, "failed")}
        rate = self.compressed / self.compress_s if self.compressed and self.compress_s else 0.0
        report = {
            "collection": args.collection, "index": str(_root(args)), **counts,
            "chunks": _new_chunks(self.results), "seconds": round(seconds, 3),
            "model_load_s": round(self.load_s, 3), "chunks_per_s": round(rate, 2),
            "files": [r.to_dict() for r in self.results],
            "gone": [d.path for d in self.gone],
            "left_out": [d.path for d in self.left],
            "pruned": len(self.gone) + len(self.left) if args.prune else 0,
        }  # fmt: skip
        if stopped:  # Ctrl-C or SIGTERM: these files are in, the rest were not reached
            report["stopped"] = stopped
        return report


def _stop_name(stop: KeyboardInterrupt) -> str:
    return "terminated" if isinstance(stop, Terminated) else "interrupted"


def _open_writer(args: argparse.Namespace, *more: Any, **options: Any) -> Collection:
    """`_open` of args' collection for writing; with `--wait SECONDS`, while another process writes the collection
    (an indexing service's upload job, another `add`) it tries again until that long has
    passed, then says who is in the way as without --wait (exit 75)."""
    deadline = time.monotonic() + args.wait
    said = False
    while True:
        try:
            return _open(args.index, args.collection, *more, **options)
        except CollectionLockedError as locked:
            if locked.here or time.monotonic() >= deadline:
                raise
        if not said and not getattr(args, "quiet", False):
            pid = writer_pid(collection_dir(args.index, args.collection)) or "?"
            print(
                f"{PROG}: waiting for pid {pid} to finish writing '{args.collection}' (up to "
                f"{args.wait:g}s)",
                file=sys.stderr,
            )
            said = True
        time.sleep(0.25)


def _gone(col: Collection, targets: list[str]) -> list[Any]:
    """The collection's documents from under the folders in `targets` whose files are gone:
    deleted, renamed or moved away since they were indexed."""
    folders = [Path(t).expanduser().resolve() for t in targets]
    folders = [f for f in folders if is_folder(f)]
    if not folders:
        return []
    under = tuple(path_text(f).rstrip(os.sep) + os.sep for f in folders)
    missing = [
        d for d in col.list_documents() if d.path and d.path.startswith(under) and file_gone(d.path)
    ]
    if missing:  # a stored path is text: a name that is not UTF-8 has `\xNN` escapes there
        there = {path_text(os.path.join(r, f)) for x in folders for r, _, fs in os.walk(x) for f in fs}  # fmt: skip
        missing = [d for d in missing if d.path not in there]
    return missing


def _left_out(col: Collection, left: list[tuple[Path, str]]) -> list[Any]:
    """The collection's documents indexed from files (or from under folders) that this run's
    walks left out, by --exclude or .gitignore files."""
    if not left:
        return []
    files, folders = set(), []
    for path, _ in left:
        real = path_text(path.resolve())
        if is_folder(path):
            folders.append(real.rstrip(os.sep) + os.sep)
        else:
            files.add(real)
    under = tuple(folders)
    return [
        d for d in col.list_documents()
        if d.path and (d.path in files or (under and d.path.startswith(under)))
        and not file_gone(d.path)
    ]  # fmt: skip


def _check_model_args(args: argparse.Namespace, col: Collection | None) -> None:
    """The checks loading the model makes, for an `add` that loads none (every file
    unchanged, a duplicate or unreadable): a wrong --checkpoint, --chunk-tokens or --overlap,
    or a checkpoint that did not build the collection, is an error now, not only on the next
    run that has something to index. The checkpoint's files are read, not the model. With
    none of the three given and a collection built by the default adapters there is nothing
    to check, and the import (mlx-lm, transformers: ~2 s) is skipped."""
    built_by = col.manifest.checkpoint if col is not None else None
    given = (args.checkpoint, args.chunk_tokens, built_by)
    if given == (None, None, None) and args.overlap == DEFAULT_OVERLAP:
        return
    from clara.checkpoint import checkpoint_manifest, resolve_checkpoint
    from clara.model import ClaraConfig

    where = resolve_checkpoint(args.model, args.checkpoint)
    expected = checkpoint_manifest(where) if where else None
    limit = expected["doc_max_tokens"] if expected else ClaraConfig().doc_max_tokens
    chunk_limits_for(limit, args.chunk_tokens, args.overlap)
    if expected is not None and col is not None:  # (fresh adapters: known only once loaded)
        if args.checkpoint is not None:  # as `model_manifest` records it: for the fix-it
            expected = dict(expected, checkpoint=str(where.resolve()))
        col.manifest.check_matches(Manifest.from_dict(expected), args.collection)


def _in_given_order(
    events: Iterable[FileResult | Progress], paths: list[Path]
) -> Iterator[FileResult | Progress]:
    """The indexer's events, its FileResults in the order of `paths`: a file it settles at
    once (unchanged, a duplicate, a scanned PDF) waits for the files named before it, which
    may still be compressing. Progress events pass at once."""
    position = {p: i for i, p in enumerate(paths)}
    held: dict[int, FileResult] = {}
    due = 0
    for event in events:
        if not isinstance(event, FileResult) or event.path not in position:
            yield event
            continue
        held[position[event.path]] = event
        while due in held:
            yield held.pop(due)
            due += 1
    yield from (held[i] for i in sorted(held))


def _new_chunks(results: list[FileResult]) -> int:
    return sum(r.chunks for r in results if r.status in ("added", "replaced", "recompressed"))


def _error_line(error: Exception | None) -> str:
    """A file's error, its path shown as the lines of files that went well show theirs
    (relative to the working folder when under it)."""
    if isinstance(error, DocumentError):
        return f"{show_path(error.path)}: {error.reason}" + (
            f": {error.hint}" if error.hint else ""
        )
    return str(error)


def _run_add(
    args: argparse.Namespace, events, n_files: int, run: _AddRun, *, recompress: bool = False
) -> None:
    """Consume the pipeline's events: progress bar (files, chunks/s), one line per file, each
    file's result and the chunks compressed into `run` as they come (kept there when Ctrl-C
    stops the run). `recompress`: the events are `rebuild --recompress`'s, and a stop says
    what that keeps."""
    with progress_bar(n_files, desc="indexing", unit="file", quiet=args.quiet) as bar:
        try:
            _take_events(args, events, run, bar)
        except KeyboardInterrupt:  # (Ctrl-C: run_main says "interrupted" and exits 130)
            if recompress:  # (add's wording told of files indexed, of a collection unchanged)
                kept = sum(r.status == "recompressed" for r in run.results)
                done = (
                    f"the {_n(kept, 'document')} re-encoded so far {'is' if kept == 1 else 'are'}"
                    if kept else "nothing is"
                )  # fmt: skip
                said = (
                    f"stopped; {done} kept aside, and the collection is unchanged and still "
                    "searched: run the same command again to go on"
                )
            else:
                kept = sum(r.status in ("added", "replaced") for r in run.results)
                done = f"the {_n(kept, 'file')} indexed in this run stay" if kept else "nothing was"
                said = (
                    f"stopped; {done} indexed, and a file cut short resumes where it was: run "
                    "the same command again to go on"
                )
            bar.write(f"{PROG}: {said}", file=sys.stderr)
            raise


def _take_events(args: argparse.Namespace, events, run: _AddRun, bar) -> None:
    """`_run_add`'s loop. A resumed file's chunks that an earlier run compressed come in no
    Progress, so the rate counts what this run did."""
    start = time.perf_counter()
    for event in events:
        run.compress_s = time.perf_counter() - start
        if isinstance(event, Progress):
            run.compressed += event.chunks
            rate = run.compressed / max(run.compress_s, 1e-9)
            left = ""
            if event.waiting and run.compressed and rate > 0:  # (a big file: hours of it)
                s = int(event.waiting / rate)
                eta = (
                    f"{s // 3600}h{s % 3600 // 60:02d}m"
                    if s >= 3600
                    else f"{s // 60}m{s % 60:02d}s"
                )
                left = f", {event.waiting} read to go (about {eta})"
            bar.set_postfix_str(f"{run.compressed} chunks, {rate:.1f} chunks/s{left}")
            continue
        run.results.append(event)
        if event.error is not None:
            bar.write(f"{PROG}: {_error_line(event.error)}", file=sys.stderr)
        else:
            for warning in event.warnings:
                bar.write(f"{PROG}: warning: {show_path(event.path)}: {warning}", file=sys.stderr)
            if not args.quiet and not args.json:
                parts = [f"{_n(event.chunks, 'chunk')}, {event.doc_id}"] if event.doc_id else []
                what = "; ".join(parts + ([event.detail] if event.detail else []))
                bar.write(f"{event.status:<10} {show_path(event.path)}  ({what})", file=sys.stdout)
        bar.update(1)  # after its line: a log's progress line counts the files listed above it


def cmd_remove(args: argparse.Namespace) -> int:
    removed, missing = [], []
    with _open_writer(args) as col:
        for target in args.targets:
            try:
                docs = find_documents(col, target, patterns=True, remove=True)
            except ClaraError as exc:  # a name several stored paths end with
                docs, why = [], str(exc)
            else:
                near = not_found_hint(col.list_documents(), target) if not docs else ""
                near = near or f" (see {PROG} list --collection {args.collection})"
                why = f"{target}: no such document in '{args.collection}'{near}"
            if not docs:
                missing.append(target)
                print(f"{PROG}: {why}", file=sys.stderr)
            removed += docs
        removed = list({d.id: d for d in removed}.values())  # (two targets, one document)
        col.remove_documents([d.id for d in removed])  # one commit for them all
    if args.json:
        _print_json({"removed": [_doc_dict(d) for d in removed], "not_found": missing})
    else:
        for d in removed:
            print(f"removed    {show_path(d.path or d.name)}  ({_n(d.n_chunks, 'chunk')}, {d.id})")
    uploads = [f for d in removed if (f := upload_file_id(_root(args), d.path))]
    if uploads:  # (a privacy audit: its original stayed, listed and downloadable)
        print(
            f"{PROG}: {', '.join(uploads)}: uploaded through the Files API; the upload itself "
            "stays there (delete it with DELETE /v1/files/ID, or client.files.delete)",
            file=sys.stderr,
        )
    if not missing:
        return 0
    return EXIT_PARTIAL if removed else EXIT_ERROR  # (as add: the others were removed)


def cmd_list(args: argparse.Namespace) -> int:
    with _open(args.index, args.collection, readonly=True, vectors=False) as col:
        docs = col.list_documents()
    if args.json:
        _print_json([_doc_dict(d) for d in docs])
        return 0
    print(f"{'ID':<16} {'CHUNKS':>6} {'PAGES':>5} {'SIZE':>9}  {'ADDED':<16} PATH")
    for d in docs:
        added = dt.datetime.fromtimestamp(d.created).strftime("%Y-%m-%d %H:%M")
        pages = "-" if d.n_pages is None else str(d.n_pages)
        print(
            f"{d.id:<16} {d.n_chunks:>6} {pages:>5} {_size(d.size):>9}  {added:<16} "
            f"{show_path(d.path or d.name)}"
        )
    print(f"{_n(len(docs), 'document')}, {_n(sum(d.n_chunks for d in docs), 'chunk')}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with _open_read(args) as col:
        docs = find_documents(col, args.doc)
        if len(docs) != 1:
            what = "no such document" if not docs else f"{len(docs)} documents match"
            raise ClaraError(f"{args.doc}: {what} in '{args.collection}' (see clara-index list)")
        doc = docs[0]
        chunks = col.document_chunks(doc.id)
    if args.json:
        _print_json({
            **_doc_dict(doc),
            "chunk_list": [
                {"id": c.id, "ordinal": c.ordinal, "page_start": c.page_start,
                 "page_end": c.page_end, "tokens": c.n_tokens, "text": c.text}
                for c in chunks
            ],
        })  # fmt: skip
        return 0
    print(f"{doc.id}  {show_path(doc.path or doc.name)}")
    print(
        f"{_n(len(chunks), 'chunk')}, {_n(doc.n_pages, 'page') + ', ' if doc.n_pages else ''}"
        f"{_size(doc.size)}, "
        f"sha256 {doc.sha256}"
    )
    for c in chunks:
        text = c.text if args.full else snippet(c.text, SNIPPET)
        pages = _pages(doc.name, c.page_start, c.page_end, " ")
        print(f"\n[{c.ordinal}]{pages}, {c.n_tokens} tokens\n{text}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    with _open_read(args) as col:
        stats = col.stats()
        manifest = col.manifest.to_dict()
    stats["index"] = str(_root(args))
    stats["model"] = {
        k: manifest.get(k)
        for k in ("base_model", "fingerprint", "checkpoint", "compression_rate", "n_mem")
    } | {"doc_max_tokens": manifest.get("doc_max_tokens"), "hidden_size": manifest["hidden_size"]}
    if args.json:
        _print_json(stats)
        return 0
    m = stats["model"]
    print(f"collection   {stats['name']}  ({stats['index']})")
    print(f"documents    {stats['documents']}")
    print(
        f"chunks       {stats['chunks']}  ({stats['dead_rows']} removed rows awaiting compaction)"
    )
    print(f"disk         {_size(stats['bytes_on_disk'])}")
    for name, size in stats["files"].items():
        print(f"  {name:<22} {_size(size):>10}")
    print(f"index        {stats['index_type']} -> {stats['index_kind']}, dim {stats['dim']}")
    print(f"checkpoint   {m['fingerprint']}" + (f" ({m['checkpoint']})" if m["checkpoint"] else ""))
    print(
        f"model        {m['base_model']}, compression {m['compression_rate']}x, "
        f"n_mem {m['n_mem']}, d {m['hidden_size']}, doc_max_tokens {m['doc_max_tokens']}"
    )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    import mlx.core as mx
    import numpy as np

    from clara.retrieval import Fusion

    fusion = Fusion(args.fusion_k, {"dense": args.dense_weight, "lexical": args.lexical_weight})
    default = Fusion()
    unused = [flag for flag, given in (
        ("--fusion-k", args.fusion_k != default.k),
        ("--dense-weight", args.dense_weight != default.weights["dense"]),
        ("--lexical-weight", args.lexical_weight != default.weights["lexical"]),
    ) if given]  # fmt: skip
    if unused and args.mode != "hybrid":  # (an error audit: taken without a word, as
        print(  # rebuild's options once were)
            f"{PROG}: note: {', '.join(unused)} only matter{'s' * (len(unused) == 1)} with "
            f"--mode hybrid; a {args.mode} search ranks by one list",
            file=sys.stderr,
        )
    cm = _load_model(args, compressing=False)
    manifest = model_manifest(cm, args.checkpoint)
    with _open(args.index, args.collection, manifest, readonly=True) as col:
        query = np.array(cm.encode_queries([args.query]).astype(mx.float32))[0]  # (n_mem, d)
        hits = col.retrieve(
            args.query, query, args.top_k, args.mode, fusion, rerank=cm.config.dense_rerank
        )
    rows = [
        {
            "rank": i, "score": round(h.score, 6), "ranks": h.ranks, "mode": h.mode,
            "doc_id": h.doc_id, "chunk_id": h.chunk_id, "file": h.doc_name, "path": h.path,
            "page_start": h.page_start, "page_end": h.page_end, "context": h.context,
            "text": h.text,
        }
        for i, h in enumerate(hits, start=1)
    ]  # fmt: skip
    if args.json:
        _print_json({"query": args.query, "collection": args.collection, "mode": args.mode,
                     "results": rows})  # fmt: skip
        return 0
    if not rows:
        print(f"no results in collection '{args.collection}' ({args.mode} search)")
    elif rows[0]["mode"] != args.mode:
        print(f"({args.mode} search found no usable words: searched by memory vectors alone)")
    for r in rows:
        where = show_path(r["path"] or r["file"])
        ranks = ", ".join(f"{n} #{v}" for n, v in r["ranks"].items() if v is not None)
        print(
            f"{r['rank']}. {r['score']:.4f}  {where}"
            f"{_pages(r['file'], r['page_start'], r['page_end'], '  ')}"
            f"  [{ranks}]"
        )
        print(f"   {snippet(r['text'], SNIPPET)}")
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    if args.recompress:
        from indexing.pipeline import recompress

        cm = _load_model(args)
        with _open_writer(args):  # --wait: free, right before
            pass
        events = recompress(
            cm, args.index, args.collection, batch_size=args.batch_size, checkpoint=args.checkpoint
        )
        run = _AddRun(time.perf_counter())
        _run_add(args, events, _count_docs(args), run, recompress=True)
        results = run.results
        if args.index_type is not None:
            with _open(args.index, args.collection, index_type=args.index_type):
                pass
    else:
        unused = [flag for flag, given in (
            ("--model", args.model != "smollm2-135m"), ("--checkpoint", args.checkpoint),
            ("--dtype", args.dtype != "auto"),
            ("--batch-size", args.batch_size != 8),
        ) if given]  # fmt: skip
        if unused:  # (a CLI audit: they were taken without a word)
            print(
                f"{PROG}: note: {', '.join(unused)} only matter{'s' * (len(unused) == 1)} with "
                "--recompress; this rebuilds the search index from the stored vectors",
                file=sys.stderr,
            )
        with _open_writer(args, index_type=args.index_type) as col:
            col.rebuild()
        results = []
    with _open_read(args) as col:
        stats = col.stats()
    if args.json:
        _print_json({"recompressed": len(results), **stats})
    else:
        what = f"re-encoded {len(results)} documents; " if args.recompress else "rebuilt: "
        print(
            f"{what}{stats['chunks']} chunks, index {stats['index_type']} -> "
            f"{stats['index_kind']}, checkpoint {stats['fingerprint']}"
        )
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    with _open_writer(args) as col:
        dropped = col.compact()
        stats = col.stats()
    if args.json:
        _print_json({"dropped": dropped, **stats})
    else:
        rows, saves = dropped["memory_rows"], dropped["partial"]
        print(
            f"compacted '{args.collection}': {_n(rows, 'removed memory row')} and "
            f"{_n(dropped['index_vectors'], 'removed index vector')} dropped, words of "
            f"removed chunks merged away, database rewritten"
            + (f", {_n(saves, 'interrupted save')} of files gone removed" if saves else "")
            + f"; {_size(stats['bytes_on_disk'])} on disk"
        )
    if not dropped["wal_emptied"]:  # (a server mid-search for 30 s: its old pages stay)
        print(
            f"{PROG}: another process kept reading an older state of '{args.collection}', so "
            "the database's log still holds freed pages: run compact again (or once the "
            "servers reading it are stopped)",
            file=sys.stderr,
        )
        return EXIT_LOCKED
    return 0


def _count_docs(args: argparse.Namespace) -> int:
    with _open_read(args) as col:
        return col.stats()["documents"]


def cmd_collections(args: argparse.Namespace) -> int:
    rows = []
    broken = 0
    readable = _readable_fingerprints(args)
    for name in list_collections(args.index):
        try:
            with _open(args.index, name, readonly=True, vectors=False) as col:
                s = col.stats()  # (counts and sizes: no vector index loaded)
        except DamagedCollectionError as exc:  # said, and the others still listed
            print(f"{PROG}: {exc}", file=sys.stderr)
            broken += 1
            continue
        rows.append({k: s[k] for k in ("name", "documents", "chunks", "bytes_on_disk")})
        rows[-1]["fingerprint"] = s["fingerprint"]
        if readable is not None:  # (JSON: true, false, or absent when not known)
            rows[-1]["readable"] = s["fingerprint"] in readable
    titles = store_names(index_root(args.index))
    makers = store_makers(index_root(args.index))
    for r in rows:  # a vector store's own name, when it is not its folder's ("Meine Notizen")
        if titles.get(r["name"], r["name"]) != r["name"]:
            r["store_name"] = titles[r["name"]]
        r["made_by"] = makers.get(r["name"])  # the API key that made it (None: no key did)
    if args.made_by is not None:
        rows = [r for r in rows if r.get("made_by") == args.made_by]
    if args.json:
        _print_json(rows)
        return 1 if broken else 0
    root = index_root(args.index)
    if not rows and not broken and args.made_by is not None:
        print(f"no collection in {root} was made by the API key {args.made_by}")
    elif not rows and not broken:
        print(f"no collections in {root}; add documents with `clara-index add PATH`")
    width = max([len(r["name"]) for r in rows] + [10])  # vector store ids run to 27
    if rows:
        print(f"{'NAME':<{width}} {'DOCS':>6} {'CHUNKS':>8} {'SIZE':>10}  CHECKPOINT")
    for r in rows:
        notes = [f"name: {printable(r['store_name'])}"] if "store_name" in r else []
        notes += [f"made by key {r['made_by']}"] if r["made_by"] else []
        titled = f"  ({'; '.join(notes)})" if notes else ""
        print(
            f"{r['name']:<{width}} {r['documents']:>6} {r['chunks']:>8} "
            f"{_size(r['bytes_on_disk']):>10}  {r['fingerprint']}{titled}"
        )
    stale = [r["name"] for r in rows if r.get("readable") is False]
    for name in stale:  # (an upgrade audit: which ones need it was not said anywhere)
        print(
            f"  {name}: made with other adapters than this checkpoint's; to search or serve "
            f"it with them: clara-index rebuild --recompress --collection {name}"
            + _model_options(args)
        )
    return 1 if broken else 0


def _readable_fingerprints(args: argparse.Namespace) -> tuple[str, ...] | None:
    """The collection fingerprints --model/--checkpoint's adapters read (from the checkpoint's
    files: nothing is loaded); None for untrained adapters or an unreadable checkpoint."""
    from clara.checkpoint import index_fingerprints, resolve_checkpoint

    where = resolve_checkpoint(args.model, args.checkpoint)
    if where is None:
        return None
    try:
        return index_fingerprints(where)
    except (OSError, ClaraError) as exc:
        print(f"{PROG}: warning: cannot read checkpoint {where} ({exc})", file=sys.stderr)
        return None


def _model_options(args: argparse.Namespace) -> str:
    """The --model/--checkpoint a printed command needs to use the same adapters."""
    out = ""
    if args.model != "smollm2-135m":
        out += f" --model {shlex.quote(str(args.model))}"
    if args.checkpoint is not None:
        out += f" --checkpoint {shlex.quote(str(args.checkpoint))}"
    if args.index is not None:
        out += f" --index {shlex.quote(str(args.index))}"
    return out
