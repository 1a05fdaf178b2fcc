"""Prometheus metrics in the text exposition format: counters, gauges and histograms, the
set a service exports (`MetricSet`), and the middleware that counts its HTTP requests
(`MeteredGate`). Shared by clara-serve (`server.metrics`) and `clara-index serve`.

Updated from the event loop and the MLX worker thread alike, so every update takes a lock.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from fastapi.responses import PlainTextResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clara_cli.http import (
    ACCESS_NOTE,
    CALLER,
    CLIENT_GONE,
    REQUEST_ID,
    AccessGate,
    loggable_path,
)

log = logging.getLogger("clara.http")

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: Buckets of the MLX worker's phases (a decode step takes tens of milliseconds on a CPU)
#: (a cold first prefill, or a long prompt on a CPU, takes more than 10 s)
PHASE_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 10.0,
                 30.0, 60.0)  # fmt: skip
Labels = tuple[tuple[str, str], ...]


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x)) if not float(x).is_integer() else str(int(x))


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help: str) -> None:
        self.name, self.help = name, help
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    """`labelled`: every value carries labels, so none is shown before the first (an
    unlabelled 0 went away once labelled ones came: a stale series, a false `== 0`).
    `known`: the label sets known in advance, shown at 0 from the start: a series born at 2
    is no increase to Prometheus, and an alert on the first failures after a start missed
    them (an SRE's audit)."""

    kind = "counter"

    def __init__(
        self, name: str, help: str, labelled: bool = False, known: Iterable[dict[str, str]] = ()
    ) -> None:
        super().__init__(name, help)
        self.labelled = labelled or bool(known)
        self._values: dict[Labels, float] = {tuple(sorted(k.items())): 0.0 for k in known}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items()) or ([] if self.labelled else [((), 0.0)])
        return self.header() + [f"{self.name}{_labels(k)} {_number(v)}" for k, v in items]


class Gauge(Counter):
    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self._values[tuple(sorted(labels.items()))] = float(value)

    def set_all(self, series: Iterable[tuple[float, dict[str, str]]]) -> None:
        """Replace every labelled value: a series not given is gone (a deleted collection)."""
        values = {tuple(sorted(labels.items())): float(v) for v, labels in series}
        with self._lock:
            self._values = values


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        buckets: Sequence[float] = LATENCY_BUCKETS,
        labelled: bool = False,
    ) -> None:
        """`labelled` as a `Counter`'s: an unlabelled one is shown at 0 before it observes
        anything (a dashboard read "no data" after each restart)."""
        super().__init__(name, help)
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self._series: dict[Labels, list[float]] = {}  # bucket counts..., sum, count
        if not labelled:
            self._series[()] = [0.0] * (len(self.buckets) + 2)

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._series.setdefault(key, [0.0] * (len(self.buckets) + 2))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    series[i] += 1
            series[-2] += value
            series[-1] += 1

    def count(self, **labels: str) -> int:
        series = self._series.get(tuple(sorted(labels.items())))
        return int(series[-1]) if series else 0

    def render(self) -> list[str]:
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        lines = self.header()
        for key, series in items:
            for bound, n in zip(self.buckets, series):
                lines.append(
                    f"{self.name}_bucket{_labels(key + (('le', _number(bound)),))} {_number(n)}"
                )
            lines.append(f"{self.name}_sum{_labels(key)} {_number(series[-2])}")
            lines.append(f"{self.name}_count{_labels(key)} {_number(series[-1])}")
        return lines


class MetricSet:
    """Every metric a service exports: its attributes that are metrics, in order, and those
    of its attributes that are sets themselves (a part's own metrics)."""

    def all(self) -> Iterable[_Metric]:
        out: list[_Metric] = []
        for v in vars(self).values():
            if isinstance(v, _Metric):
                out.append(v)
            elif isinstance(v, MetricSet):
                out += v.all()
        return out

    def render(self) -> str:
        lines: list[str] = []
        for metric in self.all():
            lines += metric.render()
        return "\n".join(lines) + "\n"

    def response(self, accept_encoding: str = "") -> PlainTextResponse:
        """GET /metrics's answer: gzipped when the scraper takes it (`accept_encoding`, its
        Accept-Encoding header: Prometheus sends gzip) and it is big enough to gain (a
        server over thousands of collections has three series for each)."""
        text = self.render().encode()
        headers = {"Vary": "Accept-Encoding"}
        takes = {
            coding.strip().lower()
            for coding, _, q in (e.partition(";") for e in accept_encoding.split(","))
            if q.replace(" ", "").lower() not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
        }
        if len(text) >= GZIP_FROM_BYTES and "gzip" in takes:
            text = gzip.compress(text, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4", headers=headers)


#: /metrics answers this long and longer are gzipped for a scraper that takes it
GZIP_FROM_BYTES = 1024

#: The methods the metrics name (any other is "other": a label value per made-up method
#: would let any client add series)
_METHODS = ("GET", "HEAD", "POST", "DELETE", "OPTIONS")


class ServiceMetrics(MetricSet):
    """What both HTTP services export: their requests, their model worker's queue and
    readiness."""

    def __init__(self) -> None:
        self.requests = Counter(
            "clara_requests_total", "HTTP requests by method, endpoint and status", labelled=True
        )
        self.latency = Histogram(
            "clara_request_duration_seconds",
            "Time from request to the last byte, by method, endpoint and status (a refusal's few "
            "milliseconds are apart from the answers' seconds)",
            labelled=True,
        )
        self.refusals = Counter(
            "clara_refusals_total",
            "Requests answered 503, by reason (server_overloaded: a full queue; model_loading; "
            "shutting_down) and API key (--api-key-file's name; none without keys)",
            labelled=True,
        )
        self.key_requests = Counter(
            "clara_key_requests_total",
            "HTTP requests by API key (--api-key-file's names) and status",
            labelled=True,
        )
        self.queue_depth = Gauge("clara_queue_depth", "Jobs waiting for the MLX worker")
        self.model_ready = Gauge("clara_model_ready", "1 once the model is loaded")
        self.build = Gauge(
            "clara_build_info", "1, labelled with clara's version and the model", labelled=True
        )
        self.started = Gauge(
            "process_start_time_seconds", "When the process started, in seconds since the epoch"
        )
        self.started.set(_process_start())
        self.memory = Gauge(
            "process_resident_memory_bytes",
            "Memory the process holds (its peak where the system tells no current figure)",
        )

    def render(self) -> str:
        self.memory.set(_resident_bytes())
        return super().render()


def _process_start() -> float:
    """When this process started (Linux: from /proc; else when this module was imported)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/stat", "rb") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith(b"btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


def _resident_bytes() -> float:
    """The process's resident memory: Linux's current figure, else its peak (macOS's
    getrusage counts bytes, Linux's kilobytes)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return float(peak if sys.platform == "darwin" else peak * 1024)


_IMPORTED = time.time()


class MeteredGate:
    """Pure ASGI middleware (streams and disconnects pass untouched): the shared
    `AccessGate` (host, origin, API key), then the request counted and timed in `metrics`
    (`ServiceMetrics`), by `endpoint(path)` (a bounded set of labels), status, the API key's
    name and a 503's reason. uvicorn's access line for it names its request id, its key and
    its error's code (`ACCESS_NOTE`); a client gone before its answer (499) gets a line of
    its own, as uvicorn writes none, and so does a stream its client closed before the end,
    counted as a 499 too (uvicorn's line said 200 when it began)."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: ServiceMetrics,
        endpoint: Callable[[str], str],
        **access: Any,
    ) -> None:
        self.app = app
        self.access = AccessGate(app, **access)
        self.metrics, self.endpoint = metrics, endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # (the gate closes websockets, passes the lifespan)
            await self.access(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        answered = gone = False  # (the last byte of the answer sent; the client left)
        request_id = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id  # (`Request.state`)

        async def watched() -> Message:
            nonlocal gone
            message = await receive()
            gone = gone or message["type"] == "http.disconnect"
            return message

        async def send_status(message: Message) -> None:
            nonlocal status, answered, gone
            if message["type"] == "http.response.body" and not message.get("more_body"):
                answered = True
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
                code = scope["state"].get("error_code")
                ACCESS_NOTE.set(
                    f"request {request_id}"
                    + (f", key {CALLER.get()}" if CALLER.get() else "")
                    + (f", {code}" if code else "")
                )  # (read by uvicorn's access line, which this `send` writes)
            try:
                await send(message)
            except OSError:  # (uvicorn's ClientDisconnected: the client left mid-answer)
                gone = True
                raise

        token = REQUEST_ID.set(request_id)
        try:  # the gate refuses, answers an allowed origin's preflight, or calls the app
            await self.access(scope, watched, send_status)
        finally:
            REQUEST_ID.reset(token)
            during = status != CLIENT_GONE and gone and not answered
            if during:  # a stream its client closed: uvicorn logged a 200 as it began
                status = CLIENT_GONE
            self._count(scope, status, time.perf_counter() - start)
            if status == CLIENT_GONE:  # (uvicorn logs no access line for a client gone)
                host, port = scope.get("client") or ("?", 0)
                path = loggable_path(scope["path"])
                log.info(
                    '%s:%d - "%s %s" %d: the client closed the request %s its answer '
                    "(request %s)", host, port, scope["method"], path, status,
                    "during" if during else "before", request_id,
                )  # fmt: skip

    def _count(self, scope: Scope, status: int, took: float) -> None:
        m, endpoint, key = self.metrics, self.endpoint(scope["path"]), CALLER.get()
        method = scope["method"] if scope["method"] in _METHODS else "other"
        m.requests.inc(method=method, endpoint=endpoint, status=str(status))
        m.latency.observe(took, method=method, endpoint=endpoint, status=str(status))
        if key:
            m.key_requests.inc(key=key, status=str(status))
        if status == 503:
            reason = scope["state"].get("error_code") or "other"
            m.refusals.inc(reason=reason, **({"key": key} if key else {}))


#: a request id a client or proxy may give (X-Request-ID): short, printable, no spaces, and
#: none of the characters the access line's "(request ID, key NAME, CODE)" note is written
#: with (a given "x), key admin" made that note lie)
_GIVEN_ID = re.compile(r"[A-Za-z0-9!#$%&*+\-./:;<=>?@\[\]^_`{|}~]{1,128}")


def request_id_of(scope: Scope) -> str:
    """The request's id: the X-Request-ID a client or proxy sent, or a new one. Answered in
    X-Request-ID (as OpenAI's API does) and named in the log lines about the request, so a
    report or a proxy's log finds them (an SRE's audit)."""
    for key, value in scope.get("headers", []):
        if key == b"x-request-id":
            given = value.decode("latin-1").strip()
            if _GIVEN_ID.fullmatch(given):
                return given
            break
    return f"req_{secrets.token_hex(12)}"


def endpoints(exact: Iterable[str], under: dict[str, str]) -> Callable[[str], str]:
    """`MeteredGate`'s endpoint labels: a path in `exact` as it is, one under a prefix of
    `under` as that prefix's label, any other "other" (a client's made-up paths make no new
    series)."""
    exact, prefixes = frozenset(exact), tuple(under.items())

    def endpoint(path: str) -> str:
        for prefix, label in prefixes:
            if path.startswith(prefix + "/"):
                return label
        return path if path in exact else "other"

    return endpoint
