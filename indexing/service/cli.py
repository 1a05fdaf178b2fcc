"""`clara-index serve`: options and start-up of the indexing service (`indexing.service`).

Kept apart from the service so `clara-index list` and friends never import fastapi or MLX.
"""

from __future__ import annotations

import argparse

from clara.errors import ClaraError
from clara_cli.common import (
    add_query_precision_arg,
    model_dtype,
    non_negative_int,
    positive_float,
    positive_int,
)
from clara_cli.serve import (
    access_options,
    add_http_args,
    add_log_level_arg,
    configure_logging,
    serve_http,
)
from indexing.service import MAX_UPLOAD_MB


def add_upload_limit_args(group: argparse._ArgumentGroup) -> None:
    """What the Files and Vector Stores API of either server takes at most."""
    group.add_argument(
        "--max-upload-mb",
        type=positive_float,
        default=MAX_UPLOAD_MB,
        metavar="MB",
        help="largest file POST /v1/files accepts; bigger ones get 413 (default: %(default)s)",
    )
    group.add_argument(
        "--max-stores-per-key",
        type=positive_int,
        default=None,
        metavar="N",
        help="vector stores one API key may make through the API; past it, a 403 "
        "quota_exceeded (needs a key: with one --api-key alone, the whole server's limit; "
        "default: no limit)",
    )
    group.add_argument(
        "--max-upload-mb-per-key",
        type=positive_float,
        default=None,
        metavar="MB",
        help="what one API key's uploads (POST /v1/files) may hold in all; past it, a 403 "
        "quota_exceeded (needs a key: with one --api-key alone, the whole server's limit; "
        "default: no limit)",
    )


def upload_limits(args: argparse.Namespace) -> dict[str, int | None]:
    """`ServiceSettings`' upload limits from `add_upload_limit_args`' options (a limit per
    key needs a key: with one --api-key alone, every client is that key, and the limit the
    whole server's, as before 0.2.17, which refused it: an upgrade audit)."""
    per_key = args.max_upload_mb_per_key
    given = [f for f in ("max_stores_per_key", "max_upload_mb_per_key") if getattr(args, f)]
    if given and not (getattr(args, "api_key_file", None) or getattr(args, "api_key", None)):
        raise ClaraError(
            f"--{given[0].replace('_', '-')} limits each API key: start with --api-key-file "
            "(or --api-key: one key, a limit for the whole server)"
        )
    return {
        "max_upload_bytes": int(args.max_upload_mb * 2**20),
        "max_stores_per_key": args.max_stores_per_key,
        "max_upload_bytes_per_key": None if per_key is None else int(per_key * 2**20),
    }


def add_serve_args(parser: argparse.ArgumentParser) -> None:
    net = add_http_args(parser, port=8001)
    add_upload_limit_args(net)
    add_log_level_arg(net)
    add_query_precision_arg(parser.add_argument_group("search"))
    idx = parser.add_argument_group("index")
    idx.add_argument(
        "--index",
        default=None,
        metavar="DIR",
        help="folder holding the collections (= vector stores) and uploads/ "
        "(default: $CLARA_HOME/indexes); point clara-serve at the same folder",
    )
    idx.add_argument(
        "--batch-size",
        type=positive_int,
        default=8,
        metavar="N",
        help="chunks compressed per step (progress and commits); the forward-pass batch is "
        "the measured best for the device, CLARA_COMPRESS_BATCH overrides (default: %(default)s)",
    )
    idx.add_argument(
        "--overlap",
        type=non_negative_int,
        default=32,
        metavar="N",
        help="tokens shared by neighbouring chunks unless a request sets a static "
        "chunking_strategy (default: %(default)s)",
    )


def serve_command(args: argparse.Namespace) -> int:
    """Run the service until Ctrl-C; a model that cannot load ends it with that error."""

    from indexing.service.app import ServiceSettings, create_app

    settings = ServiceSettings(
        model=args.model,
        checkpoint=args.checkpoint,
        dtype=model_dtype(args),
        index_root=args.index,
        query_precision=args.query_precision,
        **upload_limits(args),
        batch_size=args.batch_size,
        overlap=args.overlap,
    )
    settings.check()  # before the port is bound and the model loads
    configure_logging(args)
    access = access_options(args)
    app = create_app(settings, **access)
    return serve_http(app, app.state.service.worker, args, access=access)
