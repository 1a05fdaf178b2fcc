"""`clara-index`: add documents to a collection, search it, inspect and maintain it, serve it.

Only `add`, `search` and `rebuild --recompress` load the model; the rest read the index alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from clara.retrieval import RETRIEVAL_MODES, Fusion
from clara_cli.common import (
    add_model_args,
    add_query_precision_arg,
    add_version_arg,
    collection_arg,
    exit_now,
    non_negative_float,
    non_negative_int,
    parse_command_line,
    path_arg,
    positive_float,
    positive_int,
    run_main,
    whole_between,
)
from indexing.commands import (
    PROG,
    cmd_add,
    cmd_collections,
    cmd_compact,
    cmd_list,
    cmd_rebuild,
    cmd_remove,
    cmd_search,
    cmd_show,
    cmd_stats,
)
from indexing.pipeline import DEFAULT_OVERLAP
from indexing.service.cli import add_serve_args, serve_command

DESCRIPTION = """\
Index documents (PDF, Word .docx, OpenDocument .odt, EPUB, PowerPoint .pptx, Excel .xlsx,
Markdown, HTML, text) into a collection of CLaRa compressed memories, and search, inspect and maintain it. Collections live under --index (default: $CLARA_HOME/indexes,
i.e. ~/.cache/clara/indexes); `clara-serve` answers from the same folder.
"""
EXAMPLES = {
    "": """examples:
  clara-index add ~/papers                      # index a folder into collection "default"
  clara-index search "What is the warranty period?"
  clara-index list
  clara-index serve                             # OpenAI-style files + vector stores API

Run `clara-index COMMAND --help` for each command's options and examples.""",
    "add": """examples:
  clara-index add ~/papers                      # a folder (recursive): .pdf .docx .md .txt ...
  clara-index add 'notes/**/*.md' report.pdf    # globs and files
  clara-index add secret.pdf --password hunter2 --collection private
  clara-index add docs --checkpoint runs/s3/final --batch-size 4   # your clara-train --out
  clara-index add ~/papers --prune              # and drop what was deleted or renamed there
  clara-index add ~/papers --wait 600           # cron: wait out the service's upload job

Files already indexed with the same content are skipped; a changed file replaces its old
chunks. Each file that cannot be read gets one error line; the others still go in (exit 3).
Documents indexed from a folder named here whose files are gone (deleted, renamed, moved) are
listed, and removed with --prune; otherwise they are still searched.""",
    "remove": """examples:
  clara-index remove doc-1a2b3c4d5e6f
  clara-index remove ~/papers/report.pdf ~/papers/old/   # a file; everything under a folder
  clara-index remove report.pdf old/             # the one stored path ending /report.pdf, /old/
  clara-index remove '~/papers/*' '*.md'         # quoted globs: files deleted since, names

What a target matches:
  an id, a path    that document; a folder (or any path ending in '/'): every document
                   under it. A relative path no stored path is matches the one stored path
                   ending with it ('notes.txt' -> /any/where/notes.txt, 'old/' -> a folder);
                   when several do, the error lists them and nothing is removed for it. Not
                   when it names a place of its own: './notes.txt', or a file or folder that
                   exists here (not indexed): the error names the stored path to give.
  a glob (quoted)  what `clara-index add` with the same glob indexed: '*', '?' and '[...]'
                   match within one folder level (not names starting with '.', as the shell),
                   '**' any number of folders (not hidden ones), and a folder it matches
                   brings everything under it but hidden files and folders: 'dir/*' is all
                   of dir, 'dir/*/' only its subfolders. Files deleted since they were
                   indexed are matched all the same.
  a glob without '/'  document names ('*.md'), uploads included.""",
    "list": "examples:\n  clara-index list\n  clara-index list --collection papers --json",
    "show": "examples:\n  clara-index show doc-1a2b3c4d5e6f\n  clara-index show report.pdf --full",
    "stats": "examples:\n  clara-index stats\n  clara-index stats --json | jq .chunks",
    "search": """examples:
  clara-index search "What is the warranty period?"
  clara-index search "boiling point of water" -k 3 --collection physics --json
  clara-index search "git branch --set-upstream-to" --mode lexical

Each result shows its score (hybrid: the fused score) and its rank in each retriever.""",
    "rebuild": """examples:
  clara-index rebuild                            # re-create the FAISS index from stored vectors
  clara-index rebuild --index-type hnsw          # convert it to HNSW
  clara-index rebuild --recompress --checkpoint runs/s3/final
                                                 # re-encode every chunk with a new checkpoint""",
    "compact": """Removing a document (clara-index remove, add --prune, a changed file indexed again, an
upload deleted or detached) takes it out of every answer at once; some of its data stays on
disk until later: its memory rows until a quarter of the memory file is removed rows, its
words in the full-text index until a merge, freed database pages, and what an interrupted
run kept of a file deleted since. compact erases all of it now (for a deletion request, or
to get the space back); searches and a running server go on meanwhile.

examples:
  clara-index remove report.pdf && clara-index compact
  clara-index compact --collection papers --json""",
    "collections": "examples:\n  clara-index collections\n  clara-index collections --json\n"
    "  clara-index collections --made-by alice",
    "serve": """endpoints (OpenAI's Files + Vector Stores API; a vector store is a collection):
  POST /v1/files (multipart: file, purpose=assistants)   GET /v1/files
  GET|DELETE /v1/files/{file_id}                         GET /v1/files/{file_id}/content
  POST|GET /v1/vector_stores                             GET|POST|DELETE /v1/vector_stores/{id}
  POST|GET /v1/vector_stores/{id}/files                  (POST queues a compression job)
  GET|POST|DELETE /v1/vector_stores/{id}/files/{file_id} (status / attributes / remove)
  POST /v1/vector_stores/{id}/file_batches               GET .../file_batches/{batch_id}
  POST .../file_batches/{batch_id}/cancel                GET .../file_batches/{batch_id}/files
  POST /v1/vector_stores/{id}/search                     GET /health (no key needed)
Uploads are kept in <index>/uploads/. Jobs run one model batch at a time on one thread and
resume after a restart. While a job writes a collection, `clara-index add/remove` on it is
refused (naming the service's pid, exit 75): retry when the job is done, or give it --wait
SECONDS to wait for it. Reading is always possible.

examples:
  clara-index serve                              # http://127.0.0.1:8001/v1
  clara-index serve --port 9000 --api-key secret --max-upload-mb 50

Then, with the official openai SDK:
  client = OpenAI(base_url="http://127.0.0.1:8001/v1", api_key="secret")
  f = client.files.create(file=open("a.pdf", "rb"), purpose="assistants")
  vs = client.vector_stores.create(name="papers")          # = collection "papers"
  client.vector_stores.files.create_and_poll(file_id=f.id, vector_store_id=vs.id)
  client.vector_stores.search(vs.id, query="warranty period")""",
}


# ---- arguments -----------------------------------------------------------------------------
def _query(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("the query is empty: say what to look for")
    return value


def _parents() -> dict[str, argparse.ArgumentParser]:
    where = argparse.ArgumentParser(add_help=False)
    group = where.add_argument_group("index")
    group.add_argument(
        "--index",
        default=None,
        metavar="DIR",
        help="folder holding the collections (default: $CLARA_HOME/indexes)",
    )
    group.add_argument(
        "--collection",
        default="default",
        type=collection_arg("--index"),
        metavar="NAME",
        help="collection to use (default: %(default)s)",
    )
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("--json", action="store_true", help="print JSON for scripts")
    model = argparse.ArgumentParser(add_help=False)
    add_model_args(model)
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar and no per-file lines"
    )
    wait = argparse.ArgumentParser(add_help=False)
    wait.add_argument(
        "--wait", type=non_negative_float, default=0.0, metavar="SECONDS",
        help="while another process writes the collection (a server indexing an upload, "
        "another clara-index add/remove/rebuild), retry for up to SECONDS, then exit 75 as "
        "without it; rebuild --recompress waits after loading the model (default: 0, do not "
        "wait)",
    )  # fmt: skip
    return {"where": where, "out": out, "model": model, "quiet": quiet, "wait": wait}


def _index_type(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--index-type",
        choices=("auto", "flat", "hnsw", "ivf"),
        default=None,
        help="FAISS index kind, kept by the collection (default: the collection's, else "
        "'auto': exact search up to 50k chunks, then IVF)",
    )


class _Parser(argparse.ArgumentParser):
    """argparse, plus a hint when a file named like an option (`-notes.txt`) was taken for
    one: "the following arguments are required: PATH" said nothing of it."""

    argv: list[str] = []

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        self.argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
        return super().parse_known_args(args, namespace)

    def error(self, message: str):  # type: ignore[override]
        given = self.argv[: self.argv.index("--")] if "--" in self.argv else self.argv
        dashed = [a for a in given if a.startswith("-") and a != "-" and os.path.exists(a)]
        missing = message.startswith(("the following arguments are required", "unrecognized"))
        if dashed and missing:
            message += (
                f" ('{dashed[0]}' is a file taken for an option: write -- before file names, "
                f"or ./{dashed[0]})"
            )
        super().error(message)


def _pattern(value: str) -> str:
    """argparse type: an --exclude pattern, not empty (an unset variable left nothing out)."""
    if not value.strip():
        raise argparse.ArgumentTypeError(
            "an empty pattern (an unset variable?): name what to leave out"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EXAMPLES[""],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version_arg(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = _parents()

    def command(name: str, help: str, *parents: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=help,
            epilog=EXAMPLES[name],
            parents=[p[x] for x in parents],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    add = command("add", "index files, folders and globs", "where", "out", "quiet", "wait", "model")
    add.add_argument(
        "paths", nargs="+", type=path_arg, metavar="PATH", help="files, folders or glob patterns"
    )
    add.add_argument("--password", default=None, help="password of encrypted PDFs")
    add.add_argument(
        "--reread",
        action="store_true",
        help="read and compress the files named again even when they are indexed unchanged "
        "(after an upgrade that reads their type better: README, Upgrading)",
    )
    add.add_argument(
        "--exclude",
        action="append",
        default=[],
        type=_pattern,
        metavar="PATTERN",
        help="leave out files and folders inside the folders and globs named: a pattern "
        "without '/' matches names ('*.draft.md', 'node_modules'), one with '/' paths under "
        "the folder named ('archive/*'); may be given more than once. Documents already "
        "indexed from them stay until --prune (the run names them)",
    )
    add.add_argument(
        "--no-ignore",
        action="store_true",
        help="also read what folders' .gitignore files name (and, inside a git work tree, "
        "those of the folders above and .git/info/exclude), and dependency folders "
        "(node_modules, site-packages, __pycache__, bower_components), which are left out "
        "by default",
    )
    add.add_argument(
        "--prune", action="store_true",
        help="remove documents indexed from the folders named whose files no longer exist, "
        "or that this run leaves out (--exclude, .gitignore files)",
    )  # fmt: skip
    chunk = add.add_argument_group("chunking and compression")
    chunk.add_argument(
        "--chunk-tokens",
        type=positive_int,
        default=None,
        metavar="N",
        help="tokens per chunk, at most the checkpoint's doc_max_tokens (default: that less "
        "32 for the chunk's context line: 224 for the default model)",
    )
    chunk.add_argument(
        "--overlap", type=non_negative_int, default=DEFAULT_OVERLAP, metavar="N", help="tokens shared by neighbouring "
        "chunks (default: %(default)s)",
    )  # fmt: skip
    chunk.add_argument(
        "--batch-size", type=positive_int, default=8, metavar="N",
        help="chunks compressed per step (progress and commits); the forward-pass batch is "
        "the measured best for the device, CLARA_COMPRESS_BATCH overrides (default: %(default)s)",
    )  # fmt: skip
    _index_type(add)
    add.set_defaults(func=cmd_add)

    rm = command("remove", "remove documents by id, path, folder or glob", "where", "out", "wait")
    rm.add_argument(
        "targets", nargs="+", type=path_arg, metavar="DOC_ID_OR_PATH",
        help="a document id; a file or folder as indexed (a trailing '/': everything under "
        "the folder); a name that one stored path ends with ('notes.txt', 'old/'); or a "
        "quoted glob, which removes what `add` with the same glob indexed (see below)",
    )  # fmt: skip
    rm.set_defaults(func=cmd_remove)

    command("list", "list the documents of a collection", "where", "out").set_defaults(
        func=cmd_list
    )
    show = command("show", "show a document's chunks with their pages", "where", "out")
    show.add_argument(
        "doc", metavar="DOC_ID_OR_PATH", help="a document id (clara-index list) or its file path"
    )
    show.add_argument("--full", action="store_true", help="print whole chunks, not snippets")
    show.set_defaults(func=cmd_show)

    stats = command("stats", "documents, chunks, disk use, index type, model", "where", "out")
    stats.set_defaults(func=cmd_stats)

    search = command("search", "search a collection with a question", "where", "out", "model")
    search.add_argument("query", type=_query, help="the question or text to look for")
    add_query_precision_arg(search)
    search.add_argument(
        "-k", "--top-k", type=whole_between(1, 10_000), default=5, metavar="K",
        help="results to show, up to 10000 (default: %(default)s)",
    )  # fmt: skip
    search.add_argument(
        "--mode", choices=RETRIEVAL_MODES, default="hybrid",
        help="hybrid: memory vectors and words fused by reciprocal rank (default); dense: "
        "memory vectors (query adapter) only; lexical: BM25 over the chunks' words only",
    )  # fmt: skip
    fusion = search.add_argument_group("fusion (hybrid)")
    default = Fusion()
    fusion.add_argument(
        "--fusion-k", type=positive_float, default=default.k, metavar="K",
        help="reciprocal rank fusion constant: score = sum weight / (K + rank) "
        "(default: %(default)s)",
    )  # fmt: skip
    fusion.add_argument(
        "--dense-weight", type=non_negative_float, default=default.weights["dense"], metavar="W",
        help="weight of the memory-vector ranking (default: %(default)s)",
    )  # fmt: skip
    fusion.add_argument(
        "--lexical-weight", type=non_negative_float, default=default.weights["lexical"],
        metavar="W",
        help="weight of the BM25 ranking (default: %(default)s)",
    )  # fmt: skip
    search.set_defaults(func=cmd_search)

    rebuild = command(
        "rebuild", "re-create the search index (or re-encode everything)",
        "where", "out", "quiet", "wait", "model",
    )  # fmt: skip
    rebuild.add_argument(
        "--recompress",
        action="store_true",
        help="re-encode every stored chunk with --model/--checkpoint (e.g. after training); "
        "without it, only the FAISS index is rebuilt from the stored vectors (no model)",
    )
    rebuild.add_argument(
        "--batch-size", type=positive_int, default=8, metavar="N",
        help="chunks compressed per step with --recompress (default: %(default)s)",
    )  # fmt: skip
    _index_type(rebuild)
    rebuild.set_defaults(func=cmd_rebuild)

    compact = command(
        "compact", "erase from disk what removed documents left there", "where", "out", "wait"
    )
    compact.set_defaults(func=cmd_compact)

    cols = command("collections", "list the collections under --index", "out")
    cols.add_argument("--index", default=None, metavar="DIR", help="default: $CLARA_HOME/indexes")
    cols.add_argument(
        "--made-by", default=None, metavar="KEY_NAME",
        help="only the vector stores made through the API with this API key (its name in "
        "--api-key-file): what to delete when a customer leaves",
    )  # fmt: skip
    add_model_args(
        cols,
        "the CLaRa checkpoint you serve with: collections its adapters cannot read are marked "
        "with the rebuild that re-encodes them (default: the adapters shipped for "
        "smollm2-135m; no mark for untrained ones)",
        model_use="the base model the checkpoint is for (nothing is loaded)",
        dtype=False,
    )
    cols.set_defaults(func=cmd_collections)

    serve = command(
        "serve", "run the indexing HTTP service (OpenAI files + vector stores)", "model"
    )
    add_serve_args(serve)
    serve.set_defaults(func=serve_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_command_line(build_parser(), argv)
    if args.func is not serve_command:  # a collection's notes are printed once, "clara-index:
        # ..." (commands._open), not also by Python's last-resort handler for the log record
        quiet = logging.getLogger("clara.index")
        if not quiet.handlers:
            quiet.addHandler(logging.NullHandler())
    try:
        code = run_main(PROG, lambda: args.func(args))
    except BrokenPipeError:  # `clara-index list | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if argv is None and args.func is serve_command:  # as clara-serve (clara_cli.common)
        exit_now(code)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
