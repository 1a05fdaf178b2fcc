"""`clara-serve`: run the OpenAI-compatible generation service.

clara-serve                                  # default model, $CLARA_HOME/indexes/default
clara-serve --index ./idx --collection docs --port 8080 --api-key secret
"""

from __future__ import annotations

import argparse
import urllib.parse
from pathlib import Path

from clara.errors import ClaraError
from clara.retrieval import READING_MODES
from clara_cli.common import (
    add_model_args,
    add_query_precision_arg,
    add_version_arg,
    collection_arg,
    exit_now,
    model_dtype,
    non_negative_float,
    non_negative_int,
    positive_int,
    run_main,
    whole_between,
)
from clara_cli.serve import (
    access_options,
    add_http_args,
    add_log_level_arg,
    configure_logging,
    serve_http,
)
from indexing.service.cli import add_upload_limit_args, upload_limits
from server.protocol import ServingDefaults

DESCRIPTION = """\
Serve a CLaRa model over an OpenAI-compatible HTTP API: POST /v1/chat/completions (streaming
or not), POST /v1/responses (Responses API with file_search; GET/DELETE /v1/responses/{id},
GET /v1/responses/{id}/input_items), POST /v1/completions (legacy text completion: the prompt
as it is to the bare model, no retrieval), POST /v1/embeddings, GET /v1/models and
/v1/models/{id}, GET /health, GET /metrics (Prometheus), and OpenAI's Files + Vector Stores
API (/v1/files, /v1/vector_stores: upload documents, index them into collections, search;
--no-files-api turns it off). GET / is a web chat in the browser, and /docs the API reference.
/v1/models lists the model twice: --served-model-name, and NAME-no-retrieval, the same model
answering without the documents (for a chat app's side requests: titles, tags).
Each chat request retrieves the top-k chunks of the index collection for the latest user
turn (with the user turns before it, --history-turns) and answers from what they hold (--mode); the answer's message carries them in
`sources` (and `annotations`). Request extensions (OpenAI SDK: extra_body): top_k,
collection, retrieval (false: no retrieval), mode ("memory" | "text": the chunks' raw text |
"mixed": the best chunk's text and the others' memories; default --mode), retrieval_mode
("hybrid" | "dense" | "lexical"), filters (OpenAI's attribute filters: which documents),
ignore_eos.
"""


CPU_SETTINGS = """\
environment:
  XDG_CACHE_HOME        where compiled kernels are kept (clara/ under it; default ~/.cache;
                        where it cannot be written: $CLARA_HOME/cache, then TMPDIR)
  FORWARDED_ALLOW_IPS   proxies whose X-Forwarded-For the access log believes (uvicorn's;
                        default 127.0.0.1)
  CLARA_DEBUG           1: a failed start prints its traceback
CPU settings (Linux; logged at startup as "CPU matmuls: ..."):
  CLARA_DECODE_WEIGHTS  float16 (default) | int8 | float32: the decode-only weights' copies
                        the thin-matmul kernel reads (int8 is faster; its greedy answers
                        drift from float32's)
  CLARA_THIN            off: every matmul through OpenBLAS (no thin-matmul kernel)
  CLARA_THIN_ROWS       widest product the thin kernel takes (default 16)
  CLARA_DECODE_THREADS  threads of decode steps (default: all cores)
  CLARA_PREFILL_THREADS threads of prefill, query encodings and compression (default: all
                        cores; OpenBLAS: one beside packed weights)
  CLARA_BLAS            off: MLX's reference BLAS; or a path to an OpenBLAS library
  CLARA_JIT_NATIVE      off: MLX's fused CPU kernels for baseline x86-64 (default: -march=native)
  CLARA_CPU_ATTENTION   off: mlx-lm's attention (default: clara's fused-softmax CPU attention)
  (all of them, and what each measured: docs/CPU.md)
"""


EXAMPLES = """examples:
  clara-serve                                   # the default model and collection, port 8000
  clara-serve --collection papers --top-k 3     # answer from another collection
  clara-serve --host 0.0.0.0 --api-key "$KEY"   # reachable from other machines, with a key
  clara-serve --checkpoint runs/s3/final        # adapters you trained (clara-train)

"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clara-serve",
        description=DESCRIPTION,
        epilog=EXAMPLES + CPU_SETTINGS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version_arg(parser)
    add_model_args(parser)
    add_query_precision_arg(parser)
    net = add_http_args(parser, port=8000)
    net.add_argument(
        "--served-model-name",
        default=None,
        metavar="NAME",
        help="model id clients send and /v1/models lists, with NAME-no-retrieval (default: "
        "clara-<base model name>, e.g. clara-smollm2-135m); the base model's own id is accepted "
        "too",
    )
    net.add_argument(
        "--queue-size",
        type=positive_int,
        default=16,
        metavar="N",
        help="requests that may wait for the model, for each API key (--api-key-file) or "
        "for all without keys; more get 503 with Retry-After; waiting requests of several keys "
        "take turns (default: %(default)s)",
    )
    net.add_argument(
        "--max-batch",
        type=positive_int,
        default=16,
        metavar="N",
        help="chat requests decoded together in one batch; more wait in the queue "
        "(default: %(default)s)",
    )
    net.add_argument(
        "--max-batch-per-key",
        type=positive_int,
        default=None,
        metavar="N",
        help="with --api-key-file: one key's chat requests decode at most N at a time, so "
        "that one client's burst leaves room in the batch for the others' (its others wait "
        "their turn in the queue); default: up to --max-batch",
    )
    net.add_argument(
        "--prefill-batch",
        type=positive_int,
        default=8,
        metavar="N",
        help="requests that arrive together are prefilled at most N at a time in one batched "
        "forward pass (default: %(default)s)",
    )
    net.add_argument(
        "--prefill-tokens",
        type=non_negative_int,
        default=320,
        metavar="N",
        help="prompt positions per prefill pass at most (longer prompts get a pass of their "
        "own, or one per CPU lane beside other long ones; 0: no limit). Passes of a few "
        "hundred positions cost the least per prompt on a CPU, and smaller passes send first "
        "tokens sooner (default: %(default)s)",
    )
    net.add_argument(
        "--prefix-cache-mb",
        type=non_negative_int,
        default=256,
        metavar="MB",
        help="KV states of repeated prompt prefixes kept per adapter, at most: the system "
        "prompt every request shares and the text after it when it repeats (a mixed prompt's "
        "best chunk: a prompt whose best chunk is cached prefilled ~2.2x faster here); ~13 MB "
        "an entry for the default model; 0 keeps the newest prefix only (default: %(default)s)",
    )
    net.add_argument(
        "--sse-keepalive",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="send an SSE ': keep-alive' comment after this long without a token "
        "(default: %(default)s)",
    )
    net.add_argument(
        "--responses-db",
        default=None,
        metavar="FILE",
        help="SQLite file keeping stored responses (store: true) for previous_response_id and "
        "GET /v1/responses/{id} (default: $CLARA_HOME/responses.sqlite)",
    )
    net.add_argument(
        "--keep-responses",
        type=non_negative_float,
        default=0.0,
        metavar="DAYS",
        help="delete stored responses older than DAYS (OpenAI keeps them 30 days): when the "
        "store is first used, then hourly as responses are stored (default: 0, keep them "
        "until deleted)",
    )
    net.add_argument(
        "--truncate-embeddings",
        action="store_true",
        help="/v1/embeddings reads the start of an input longer than the query encoder does "
        "(as Ollama does) instead of a 400 context_length_exceeded (as OpenAI does), for "
        'clients that embed long chunks and cannot send "truncate": true',
    )
    net.add_argument(
        "--collection-models",
        action="store_true",
        help="/v1/models also lists a model NAME@COLLECTION for each collection (those the "
        "request's API key may read; a vector store by the name it was given where no other "
        "has it), for chat apps whose only choice is the model: a chat with it searches that "
        "collection (any client may ask for such a name without it, and for several joined "
        "by '+': NAME@handbook+notes)",
    )
    net.add_argument(
        "--source-events",
        action="store_true",
        help="streamed chat completions also send each source as an Open WebUI source event "
        '(a \'data:\' line holding {"event": {"type": "source", ...}}), and answers not '
        "streamed list them in a top-level 'sources', so that Open WebUI shows every "
        "retrieved chunk with its text (without it, one citation of the answer's likeliest "
        "source); other OpenAI clients read such a line as a chunk without choices: only for "
        "a server that Open WebUI alone uses",
    )
    net.add_argument(
        "--sources-in-text",
        action="store_true",
        help="a chat completion's answer ends with a line naming the files it draws on "
        "('Sources: handbook.pdf, page 3'), or saying that no document matched, for chat apps "
        "that show the answer's text alone (Chatbox, Jan, LibreChat, Msty): the sources are "
        "otherwise in fields of the answer they do not show. It is part of the answer's text, "
        "and of the conversation's history a client sends back",
    )
    net.add_argument(
        "--embedding-token-ids",
        action="store_true",
        help="/v1/embeddings takes inputs as token ids of this model's tokenizer; without it "
        "they are refused: a client's ids are another tokenizer's (LangChain's OpenAIEmbeddings "
        "sends tiktoken's), and read as this model's they are other words",
    )
    net.add_argument(
        "--accept-any-model",
        action="store_true",
        help="answer requests whatever model they name (e.g. code written for OpenAI that "
        "asks for gpt-4.1), instead of 404 model_not_found; answers name the served model "
        "(a name NAME@COLLECTION of the served model still needs a collection there)",
    )
    net.add_argument(
        "--no-files-api",
        dest="files_api",
        action="store_false",
        help="do not serve the Files + Vector Stores API (/v1/files, /v1/vector_stores) on this "
        "port (run `clara-index serve` for it instead)",
    )
    net.add_argument(
        "--files-url",
        metavar="URL",
        help="with --no-files-api: the address clients reach that clara-index serve at (e.g. "
        "http://localhost:8001), which the links of uploaded sources then name (default: this "
        "server's own /v1/files/..., which answer 404 without the Files API)",
    )
    add_upload_limit_args(net)
    add_log_level_arg(net)
    rag = parser.add_argument_group("retrieval")
    rag.add_argument(
        "--index",
        default=None,
        metavar="DIR",
        help="index root holding the collections (default: $CLARA_HOME/indexes); it may not "
        "exist yet: until it does, answers come without retrieval",
    )
    rag.add_argument(
        "--collection",
        type=collection_arg("--index"),
        default="default",
        help="collection searched when a request names none (default: %(default)s)",
    )
    rag.add_argument(
        "--top-k",
        type=non_negative_int,
        default=5,
        metavar="K",
        help="chunks retrieved per request unless it sets top_k; 0: no retrieval (default: "
        "%(default)s)",
    )
    rag.add_argument(
        "--mode",
        choices=READING_MODES,
        default=None,
        help="what the model reads unless a request sets mode: memory (the generator reads the "
        "chunks' 16x memories, CLaRa), text (the bare model reads their raw text), mixed (the "
        "generator reads the best chunk's text and the others' memories). Default: the mode "
        "the checkpoint names (default_mode in its clara_config.json), else memory; the "
        "adapters shipped for smollm2-135m name mixed: on held-out questions they answered "
        "about twice as well that way (README, 'Which mode')",
    )
    rag.add_argument(
        "--history-turns",
        type=non_negative_int,
        default=2,
        metavar="N",
        help="earlier user/assistant exchanges (question and answer pairs) kept in the prompt "
        'of a chat completion or a response (one with truncation "disabled" reads its '
        "whole conversation), and in every retrieval query (default: %(default)s)",
    )
    gen = parser.add_argument_group("generation")
    gen.add_argument(
        "--max-context",
        type=whole_between(2),
        default=None,
        metavar="N",
        help="positions the generator may use, prompt + answer (default: the model's "
        "max_position_embeddings); longer prompts get 400 context_length_exceeded",
    )
    gen.add_argument(
        "--max-tokens",
        type=positive_int,
        default=512,
        metavar="N",
        help="answer length when a chat or Responses request sets no max_tokens (default: "
        "%(default)s; /v1/completions defaults to 16, as OpenAI's)",
    )
    gen.add_argument(
        "--max-tokens-limit", type=positive_int, default=None, metavar="N",
        help="the most tokens any request may generate: a larger max_tokens (or --max-tokens "
        "default) is cut to N, and an answer that reaches it ends with finish_reason 'length' "
        "(Responses: status 'incomplete') (default: no limit beyond the context's room)",
    )  # fmt: skip
    gen.add_argument(
        "--temperature",
        type=non_negative_float,
        default=0.0,
        help="sampling temperature when a request sets none; 0 is greedy, as CLaRa was "
        "evaluated (default: %(default)s)",
    )
    return parser


def responses_db(args: argparse.Namespace) -> Path | None:
    """--responses-db, checked: not a folder (the server started, and every response was a
    500 "unable to open database file")."""
    if not args.responses_db:
        return None
    path = Path(args.responses_db).expanduser()
    if path.is_dir():
        raise ClaraError(
            f"--responses-db {args.responses_db} is a folder: name the SQLite file to keep "
            f"stored responses in (e.g. {path / 'responses.sqlite'}; it is made if missing)"
        )
    return path


def files_url(args: argparse.Namespace) -> str | None:
    """Where sources' upload links point: --files-url, checked (an http(s) address, given
    with --no-files-api only), else this server under its --root-path (None: its root)."""
    url = args.files_url
    if url is None:
        return getattr(args, "root_path", "") or None
    if args.files_api:
        raise ClaraError(
            "--files-url goes with --no-files-api: this server serves the Files API itself, "
            "and its sources link there"
        )
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ClaraError(
            f"--files-url {url}: give the address of clara-index serve as clients reach it, "
            "e.g. http://localhost:8001 (http or https, no query)"
        )
    return url.rstrip("/").removesuffix("/v1")


def serve(args: argparse.Namespace) -> int:
    from clara.checkpoint import default_reading_mode
    from server.app import create_app
    from server.engine import Settings

    if args.max_batch_per_key is not None and not args.api_key_file:
        raise ClaraError(  # (a review: one --api-key made the cap the whole server's)
            "--max-batch-per-key gives each API key of --api-key-file its places in the "
            "batch; without that file every client is the same key (or none): use "
            "--max-batch to size the batch"
        )

    settings = Settings(
        model=args.model,
        checkpoint=args.checkpoint,
        dtype=model_dtype(args),
        index_root=args.index,
        query_precision=args.query_precision,
        collection=args.collection,
        max_context=args.max_context,
        queue_size=args.queue_size,
        max_batch=args.max_batch,
        max_batch_per_key=args.max_batch_per_key,
        prefill_batch=args.prefill_batch,
        prefill_tokens=args.prefill_tokens,
        prefix_cache_mb=args.prefix_cache_mb,
    )
    settings.check()  # before the port is bound and the model loads
    configure_logging(args)
    defaults = ServingDefaults(
        top_k=args.top_k,
        collection=args.collection,
        max_tokens=args.max_tokens,
        max_tokens_limit=args.max_tokens_limit,
        temperature=args.temperature,
        history_turns=args.history_turns,
        mode=default_reading_mode(args.model, args.checkpoint, args.mode),
        truncate_embeddings=args.truncate_embeddings,
        embedding_token_ids=args.embedding_token_ids,
        files_url=files_url(args),
        source_events=args.source_events,
        collection_models=args.collection_models,
        sources_in_text=args.sources_in_text,
    )
    access = access_options(args)
    app = create_app(
        settings,
        defaults,
        served_model_name=args.served_model_name,
        **access,
        keepalive_s=args.sse_keepalive,
        responses_db=responses_db(args),
        keep_responses_days=args.keep_responses,
        files_api=args.files_api,
        accept_any_model=args.accept_any_model,
        **upload_limits(args),
    )
    hello = "/ (web chat), API under /v1"
    return serve_http(app, app.state.engine, args, hello=hello, access=access)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code = run_main("clara-serve", lambda: serve(args))
    if argv is None:  # the command itself (not a Python caller): its status, nothing after
        exit_now(code)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
