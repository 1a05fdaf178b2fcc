"""What both HTTP services share to start: the "server" options (`add_http_args`,
`access_options`, `add_log_level_arg`) and `serve_http`, which runs an app under uvicorn
beside the MLX worker until it stops (signals, grace, keep-alive, the bound port)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from clara.errors import ClaraError
from clara_cli.common import EXIT_INTERRUPTED, non_negative_float, port_arg, root_path_arg

#: Seconds a stopping server waits for requests in progress (--shutdown-grace, `serve_http`).
SHUTDOWN_GRACE_S = 30
#: Seconds one step of the model worker may take before /health calls it stalled: far past
#: any real step (an 8B model's prefill of a full batch on a slow CPU takes about a minute)
UNHEALTHY_AFTER_S = 600.0
#: API keys the start-up log names one by one at most (more: how many)
MAX_KEYS_LOGGED = 20


def add_http_args(parser: argparse.ArgumentParser, port: int) -> argparse._ArgumentGroup:
    """The "server" group both HTTP services share: --host, --port, --api-key. Returns the
    group, for the service's own options (then `add_log_level_arg`)."""
    net = parser.add_argument_group("server")
    net.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    net.add_argument("--port", type=port_arg, default=port, help="port (default: %(default)s)")
    net.add_argument(
        "--api-key",
        default=os.environ.get("CLARA_API_KEY"),
        metavar="KEY",
        help="require 'Authorization: Bearer <key>' on every endpoint but /health "
        "(default: $CLARA_API_KEY; unset: no key)",
    )
    net.add_argument(
        "--api-key-file",
        default=os.environ.get("CLARA_API_KEY_FILE"),
        metavar="FILE",
        help="keys, one per line as 'NAME KEY' (a person's or an app's name; lines starting "
        "with '#' are comments), any of which is accepted, or 'NAME KEY ROLE' for a key that "
        "may do less: 'ask' (ask and read; no upload, no deletion), 'metrics' (GET /metrics "
        "only, for a Prometheus); a last word 'collections=NAME,NAME' limits a key to those "
        "collections and the vector stores and files it makes itself. The file is read again "
        "when it changes (write it whole and rename it into place): a colleague's key is "
        "revoked by deleting its line, with no restart. What a request deletes is logged with "
        "its key's name "
        "(default: $CLARA_API_KEY_FILE; with --api-key, both are accepted)",
    )
    net.add_argument(
        "--root-path",
        type=root_path_arg,
        default=os.environ.get("CLARA_ROOT_PATH", ""),  # (argparse checks it by `type`)
        metavar="PATH",
        help="the path a reverse proxy serves this server under and strips before passing "
        "requests on (e.g. /clara for https://example.org/clara/): the links the server "
        "writes start with it (an upload's source link, the API reference's requests); the "
        "web chat needs none (default: $CLARA_ROOT_PATH; unset: none)",
    )
    net.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a name this server may be reached under besides this machine's own (a reverse "
        "proxy's, e.g. clara.example.com), and whose web pages may upload and delete; "
        "repeatable. On --host 127.0.0.1 (the default) requests addressed to any other name "
        "are refused (a web page could otherwise read your documents through DNS rebinding)",
    )
    net.add_argument(
        "--allow-origin",
        action="append",
        default=_listed(os.environ.get("CLARA_ALLOW_ORIGINS")),
        metavar="PATTERN",
        help="let the pages of another origin use this server from a browser or a desktop app "
        "(CORS): an origin as sent (https://web.chatboxai.app for Chatbox on the web; Open "
        "WebUI's own address, e.g. http://localhost:3000, for its direct connections), every "
        "origin of a scheme (tauri://* for Tauri apps such as Jan; on Windows add "
        "http://tauri.localhost, their origin there; app://* or file://* for Electron apps such as Chatbox "
        "desktop; vscode-webview://*), a domain's subdomains "
        "(https://*.example.com), any port (http://localhost:*), null (file:// pages) or * "
        "(any page; null and * need --api-key). Repeatable, besides the comma-separated "
        "$CLARA_ALLOW_ORIGINS. Default: none, only this server's own pages (the web chat)",
    )
    net.add_argument(
        "--open-metrics",
        action="store_true",
        help="serve GET /metrics without the API key, for a Prometheus that should hold no "
        "key (or give it a key of the role 'metrics': --api-key-file): anyone who reaches "
        "the port then sees the metrics, collection names and counts, API key names and "
        "the model among them",
    )
    net.add_argument(
        "--unhealthy-after",
        type=non_negative_float,
        default=UNHEALTHY_AFTER_S,
        metavar="SECONDS",
        help="/health answers 503 ('stalled') while the model worker has been on one step "
        "(a decode step, a prefill, a compression batch) this long: a hang, which a "
        "liveness probe on /health can restart; 0: never (default: %(default)s)",
    )
    net.add_argument(
        "--shutdown-grace",
        type=non_negative_float,
        default=SHUTDOWN_GRACE_S,
        metavar="SECONDS",
        help="on SIGTERM or Ctrl-C, how long requests in progress may finish (clara-serve ends "
        "answers still running 2 s (at most half the grace) before that with a 'shutting_down' "
        "error clients can read); "
        "keep it under your supervisor's kill timeout: Docker's default is 10 s, "
        "docker-compose.dev.yml allows 40 (default: %(default)s)",
    )
    return net


def _listed(value: str | None) -> list[str]:
    """A comma-separated environment variable's items ([] when unset)."""
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def access_options(args: argparse.Namespace) -> dict[str, Any]:
    """`create_app`'s keyword arguments for `clara_cli.http.AccessGate` from the "server"
    options (`add_http_args`): the API key (an empty one is an error, not "no key"), whether
    the server listens on this machine only, the other names it answers to, and the origins
    whose pages may use it (checked here, before the model loads: a pattern that lets any
    page in needs the key)."""
    from clara_cli.http import KeyFile, Keys, is_loopback, origin_rules

    key = args.api_key.strip() if args.api_key is not None else None  # (a key read from a
    # file ends in a newline: clients send it without, and every request was a 401)
    if key is not None and not key:
        raise ClaraError(
            "the API key is empty (--api-key or CLARA_API_KEY): give a key, or unset "
            "CLARA_API_KEY to serve without one"
        )
    given = {"api-key": key} if key is not None else {}
    key_file = getattr(args, "api_key_file", None)
    if key_file is not None and not key_file.strip():  # (it served with no key at all)
        raise ClaraError(
            "the API key file is empty (--api-key-file or CLARA_API_KEY_FILE): name the "
            "file, or unset CLARA_API_KEY_FILE"
        )

    def load() -> Keys:
        roles: dict[str, str] = {}
        scopes: dict[str, tuple[str, ...]] = {}
        keys = read_api_keys(key_file, given, roles, scopes) if key_file else dict(given)
        for name, value in keys.items():  # (what a header cannot carry; a space can)
            if any((ord(c) < 32 and c != "\t") or ord(c) == 127 or ord(c) > 255 for c in value):
                raise ClaraError(
                    f"the API key {name!r} has control characters, or characters past "
                    "Latin-1: clients cannot send those in a header; choose another key, e.g. "
                    "python3 -c 'import secrets; print(secrets.token_urlsafe())'"
                )
        return keys, roles, scopes

    watched = None
    if key_file:  # (its stamp before it is read: a change meanwhile is read again)
        path = Path(key_file).expanduser()
        watched = KeyFile(path, load, KeyFile.stamp_of(path), time.monotonic())
    keys, roles, scopes = load()
    origins = tuple(getattr(args, "allow_origin", None) or ())
    origin_rules(origins, keyed=bool(keys))
    return {
        "api_key": keys or None,
        "local_only": is_loopback(args.host),
        "allow_hosts": tuple(args.allow_host),
        "allow_origins": origins,
        "open_metrics": bool(getattr(args, "open_metrics", False)),
        "key_roles": roles,
        "key_scopes": scopes,
        "key_file": watched,
    }


def read_api_keys(
    path: str,
    keys: dict[str, str],
    roles: dict[str, str] | None = None,
    scopes: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, str]:
    """`keys` and those of --api-key-file: 'NAME KEY', then optionally a role and a scope
    (`collections=A,B`) lines (and blank lines, and comment lines starting with '#'); each
    key's role other than "all" goes into `roles` (`clara_cli.http.KEY_ROLES`), and the
    collections of a key limited to some into `scopes` (`clara_cli.http.KeyScope`)."""
    from clara_cli.http import KEY_ROLES

    try:
        lines = Path(path).expanduser().read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ClaraError(f"--api-key-file {path}: {why}") from None
    out = dict(keys)
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        scope = None
        if len(parts) > 2 and parts[-1].startswith(_SCOPE_WORD):
            scope = _collections(parts.pop()[len(_SCOPE_WORD) :], f"{path}, line {number}")
        if (
            len(parts) not in (2, 3)
            or (len(parts) == 3 and parts[2] not in KEY_ROLES)
            or parts[1].startswith(_SCOPE_WORD)  # (a line with its key left out)
        ):
            raise ClaraError(
                f"--api-key-file {path}, line {number}: write 'NAME KEY' (a name without "
                "spaces, then the key), and after them a role if not all: "
                + ", ".join(f"'{r}' ({what})" for r, what in KEY_ROLES.items())
                + f"; then, for a key that may read only some collections, {_SCOPE_WORD}"
                "NAME,NAME (and the vector stores and files it makes itself)"
            )
        name, key = parts[:2]
        if len(parts) == 3 and parts[2] != "all" and roles is not None:
            roles[name] = parts[2]
        if scope is not None and len(parts) == 3 and parts[2] == "metrics":
            raise ClaraError(
                f"--api-key-file {path}, line {number}: a 'metrics' key reads /metrics only, "
                f"which names every collection: leave out its {_SCOPE_WORD}"
            )
        if scope is not None and scopes is not None:
            scopes[name] = scope
        if name in out or key in out.values():
            again = "name" if name in out else "key"
            clash = name in keys if again == "name" else key in keys.values()
            where = "is --api-key's too (or CLARA_API_KEY's)" if clash else "is there twice"
            raise ClaraError(
                f"--api-key-file {path}, line {number}: the {again} {where}; each key needs a "
                "name of its own"
            )
        out[name] = key
    if len(out) == len(keys):
        raise ClaraError(f"--api-key-file {path} holds no key: add a 'NAME KEY' line")
    return out


#: What starts the last word of a key's line in --api-key-file that limits it to some
#: collections (`clara_cli.http.KeyScope`)
_SCOPE_WORD = "collections="


def _collections(value: str, where: str) -> tuple[str, ...]:
    """The collection names of a `collections=A,B` word (none: only what the key makes)."""
    from clara.paths import COLLECTION_NAME

    names = tuple(n for n in value.split(",") if n)
    for name in names:
        if not re.fullmatch(COLLECTION_NAME, name):
            raise ClaraError(
                f"--api-key-file {where}: {name!r} is not a collection name (letters, digits, "
                "'.', '_' and '-', starting with a letter or digit); write "
                f"{_SCOPE_WORD}NAME,NAME with no spaces"
            )
    return names


def add_log_level_arg(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--log-level for the HTTP services (uvicorn's levels)."""
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="how much the server logs: requests and startup at 'info', errors only at "
        "'error' (default: %(default)s)",
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=("text", "json"),
        help="'text': a line each, 'TIME LEVEL LOGGER: MESSAGE'; 'json': a JSON object each "
        "(time, level, logger, message, request_id, exception), for a log shipper (default: "
        "%(default)s)",
    )


#: Seconds an idle HTTP keep-alive connection stays open (see `serve_http`).
KEEP_ALIVE_S = 75


def configure_logging(args: argparse.Namespace) -> None:
    """The servers' log format and --log-level, on stderr: called before the app is made, so
    what it says while being made has a time and a level too (a bare line before)."""
    import logging

    if getattr(args, "log_format", "text") == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonLines())
        logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
        return
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


class JsonLines(logging.Formatter):
    """--log-format json: each record one line of JSON, a traceback inside it (a log shipper
    read a traceback's lines as records of their own: a container audit)."""

    def format(self, record: logging.LogRecord) -> str:
        from clara_cli.http import REQUEST_ID

        out: dict[str, Any] = {
            "time": _dt.datetime.fromtimestamp(record.created, _dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (request_id := REQUEST_ID.get()) is not None:
            out["request_id"] = request_id
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def serve_http(
    app, worker, args: argparse.Namespace, hello: str = "", access: dict[str, Any] | None = None
) -> int:
    """Run `app` under uvicorn on --host/--port/--log-level until it stops. `worker` (the MLX
    thread) stops uvicorn through `on_fatal`; its `error` is then raised as a `ClaraError`.
    Says where it listens once the port is bound (`hello`: what to add, e.g. the web page)
    and whose keys it accepts (`access`: the `access_options` the app was made with)."""
    import logging

    import uvicorn

    configure_logging(args)
    # (getattr: a program that runs the server itself may make `args` without them)
    app.state.unhealthy_after = getattr(args, "unhealthy_after", UNHEALTHY_AFTER_S)
    if root := getattr(args, "root_path", ""):  # (the API reference's "Try it out" asks
        app.servers = [{"url": root}, {"url": "/"}]  # through the proxy, or else directly)

    _more_open_files()
    sock = listen(args.host, args.port)  # before the model loads: a busy port fails at once
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    logging.getLogger("clara").info(
        "listening on http://%s:%d%s (the model loads now; /health says when it is ready)",
        shown, port, hello,
    )  # fmt: skip
    from clara_cli.http import is_loopback

    if key_file := getattr(args, "api_key_file", None):  # (a key left in CLARA_API_KEY is
        if access is not None:  # one of them)
            roles, scopes = access.get("key_roles") or {}, access.get("key_scopes") or {}

            def shown_key(name: str) -> str:
                notes = [roles[name]] if name in roles else []
                if name in scopes:
                    notes.append("reads " + (", ".join(scopes[name]) or "none") + " and its own")
                return f"{name} ({'; '.join(notes)})" if notes else name

            names = [shown_key(n) for n in access["api_key"] or {}]
            if len(names) <= MAX_KEYS_LOGGED:
                logging.getLogger("clara").info("API keys accepted: %s", ", ".join(names))
            else:  # (200 keys made one line of 6 KB: an audit)
                logging.getLogger("clara").info(
                    "API keys accepted: %d (%d limited to some collections, %d with a role "
                    "other than 'all'; --log-level debug lists them)",
                    len(names), len(scopes), len(roles),
                )  # fmt: skip
                logging.getLogger("clara").debug("API keys accepted: %s", ", ".join(names))
        with contextlib.suppress(OSError):
            if Path(key_file).expanduser().stat().st_mode & 0o077:
                logging.getLogger("clara").warning(
                    "--api-key-file %s may be read by other users of this machine: chmod 600 "
                    "it", key_file,
                )  # fmt: skip
    if not is_loopback(args.host) and not args.api_key and not getattr(args, "api_key_file", None):
        can = "read and change" if getattr(args, "files_api", True) else "read"
        logging.getLogger("clara").warning(
            "listening on %s without an API key: anyone who can reach this port can %s your "
            "documents; start it with --api-key (or CLARA_API_KEY)", args.host, can,
        )  # fmt: skip
    grace = getattr(args, "shutdown_grace", SHUTDOWN_GRACE_S)

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            if self.stop_signal is not None:  # (uvicorn's own line says only "Shutting down")
                name = "SIGHUP" if hung_up else signal.Signals(self.stop_signal).name
                logging.getLogger("clara").info(
                    "stopping on %s: work in progress has %g s to finish (--shutdown-grace)",
                    name, grace,
                )  # fmt: skip
            # the app ends what still runs before uvicorn cuts it (`app.state.stopping`)
            stopping = getattr(app.state, "stopping", None)
            if stopping is not None:
                stopping(grace)
            await super().shutdown(sockets=sockets)

        stop_signal: int | None = None  # what asked for the stop (said in `shutdown`)

        def handle_exit(self, sig: int, frame: Any) -> None:
            if not self.should_exit:  # (no logging in a signal handler)
                self.stop_signal = sig
            super().handle_exit(sig, frame)
            forced = getattr(app.state, "forced", None)
            if self.force_exit and forced is not None:  # (what it cuts is the server's doing)
                forced()
            # a stop asked for ends with status 0 once answers are done (uvicorn would raise
            # the signal again afterwards, and the process end killed by it, or with run_main's
            # 143 for SIGTERM)
            getattr(self, "_captured_signals", []).clear()

    # Idle keep-alive connections stay open longer than clients keep them (httpx, so the openai
    # SDK, drops its idle ones after 5 s; uvicorn's default was also 5 s): otherwise a client
    # could send its next request on a connection the server is closing at that moment, and
    # get "connection reset by peer".
    # uvicorn's loggers go through the root logger above (log_config=None): one format with
    # timestamps, all on stderr (uvicorn's own put access lines on stdout, without a time)
    logging.getLogger("uvicorn.access").addFilter(_quiet_polls)
    server = Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            log_config=None,
            timeout_keep_alive=KEEP_ALIVE_S,
            # SIGTERM lets answers in progress finish, for this long at most (init systems
            # kill after 90 s, Docker after 10 s unless told): then the app ends them
            timeout_graceful_shutdown=grace,
        )
    )

    def fatal(exc: BaseException) -> None:  # on the worker thread: ask uvicorn to stop
        server.should_exit = True

    worker.on_fatal = fatal

    def not_cut_off(record: Any) -> bool:  # (only once forced: otherwise a bug's trace)
        return not (server.force_exit and _cut_off(record))

    logging.getLogger("uvicorn.error").addFilter(not_cut_off)
    logging.getLogger("uvicorn.error").addFilter(_logged_once)

    hung_up: list[int] = []

    def hang_up(signum: int, frame: Any) -> None:  # (uvicorn's own: SIGINT and SIGTERM)
        hung_up.append(signum)  # (no logging in a signal handler: said after the stop)
        server.handle_exit(signal.SIGTERM, frame)

    hup = getattr(signal, "SIGHUP", None)
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(hup) if hup is not None and main else None
    if before is signal.SIG_DFL:  # (nohup: stays ignored)
        signal.signal(hup, hang_up)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        if before is signal.SIG_DFL:
            signal.signal(hup, before)
    if hung_up:
        logging.getLogger("clara").info("stopped on SIGHUP, as on SIGTERM")
    if worker.error is not None:
        if isinstance(worker.error, (ClaraError, OSError)):  # (a full disk is no model's)
            raise worker.error
        what = "the model worker stopped" if worker.crashed else "could not load the model"
        raise ClaraError(f"{what}: {worker.error}") from worker.error
    if server.force_exit:  # a second Ctrl-C: answers in progress were cut, not finished
        logging.getLogger("clara").warning("forced to stop: answers in progress were cut off")
        return EXIT_INTERRUPTED
    return 0


def _quiet_polls(record: Any) -> bool:
    """Leave successful health checks and metrics scrapes (every few seconds, from a load
    balancer, Docker or Prometheus) out of the access log; failed ones stay. A query's
    values are masked but those of the parameters clara's routes take (a key sent as
    ?api_key=..., which no route takes, went to the log; so would a presigned URL's). The
    line ends with the request's id, its API key's name and its error's code (`ACCESS_NOTE`:
    a 503's key was in its answer only, and no line could be found by X-Request-ID)."""
    args = record.args if isinstance(record.args, tuple) else ()
    if len(args) == 5:  # uvicorn's: (client, method, path with its query, http version, status)
        client, method, path, version, status = args
        poll = str(path).split("?")[0] in ("/health", "/metrics")
        if method in ("GET", "HEAD") and poll and status < 400:
            return False
        if "?" in str(path):
            record.args = (client, method, _QUERY_VALUE.sub(_masked, str(path)), version, status)
        from clara_cli.http import ACCESS_NOTE  # (loaded by then: the app is running)

        note = ACCESS_NOTE.get()
        if note and isinstance(record.msg, str):
            record.msg += " (%s)"
            record.args = (*record.args, note)
    return True


#: a query's parameter (name and value, or a bare value) up to the next & or the end
_QUERY_VALUE = re.compile(r"([?&])([^=&\s]*)(=?)([^&\s]*)")
#: the query parameters clara's routes take: their values are logged as sent when they look
#: like the ids, numbers and words those take
_PLAIN_QUERY = {"after", "before", "limit", "order", "purpose", "filter", "include",
                "include[]", "stream", "starting_after"}  # fmt: skip
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_.,:-]*")


def _masked(m: re.Match) -> str:
    name = urllib.parse.unquote(m[2]).lower()
    if m[3] and name in _PLAIN_QUERY and _PLAIN_VALUE.fullmatch(m[4]):
        return m[0]
    return f"{m[1]}{m[2]}=***" if m[3] else f"{m[1]}***"


def _logged_once(record: Any) -> bool:
    """Leave out uvicorn's "Exception in ASGI application" for an error clara's handler has
    logged already (`http.install_error_handlers`: Starlette raises it again): two tracebacks
    of ~60 lines for each 500."""
    exc = record.exc_info[1] if record.exc_info else None
    return not getattr(exc, "clara_logged", False)


def _cut_off(record: Any) -> bool:
    """Whether a uvicorn log record is the traceback of a request a second Ctrl-C cut off
    (each ends in CancelledError; one warning says answers were cut off)."""
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, asyncio.CancelledError):
        return True
    text = str(record.msg)
    return text.startswith("Traceback") and text.rstrip().endswith("CancelledError")


def _more_open_files() -> None:
    """Raise this process's open-file limit to the most it may have: every client connection
    holds one, besides the collections' files (macOS starts processes at 256; a few hundred
    idle or slow connections then stopped the server accepting any)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (hard, 65536, 10240):  # macOS refuses its "unlimited" hard limit
        if want == resource.RLIM_INFINITY or soft >= want:
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            return
        except (ValueError, OSError):
            continue


def answering(host: str, port: int) -> bool:
    """Whether a server already accepts connections on host:port (a wildcard host: on the
    loopback address)."""
    target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    try:
        with socket.create_connection((target, port), timeout=0.5):
            return True
    except OSError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port for uvicorn, or a ClaraError that says what to do."""

    def taken(why: str) -> ClaraError:
        return ClaraError(
            f"cannot listen on {host}:{port}: {why} (is another server using that port? pick "
            "another with --port)"
        )

    # On macOS (BSD sockets) SO_REUSEADDR lets a bind to 127.0.0.1:8000 succeed beside a
    # server on 0.0.0.0:8000 (the Docker dev stack's port), and clients then reach either:
    # ask the port first. On Linux that bind fails by itself.
    if sys.platform == "darwin" and answering(host, port):
        raise taken("a server already answers there")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not left 0: asyncio turns Nagle off (TCP_NODELAY) only on connections
    # of a socket whose protocol says TCP. With 0, every answer written in two parts (headers,
    # then body; each streamed event) waited for the client's delayed ACK: 40 ms a request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            raise ClaraError(  # (not a port in use: "pick another --port" misled)
                f"cannot listen on {host}:{port}: {exc.strerror or exc} (--host takes an "
                "address of this machine: 127.0.0.1 for this machine only, 0.0.0.0 for all)"
            ) from None
        raise taken(str(exc.strerror or exc)) from None
    return sock
