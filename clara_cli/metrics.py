"""Prometheus metrics in the text exposition format: counters, gauges and histograms, the
set a service exports (`MetricSet`), and the middleware that counts its HTTP requests
(`MeteredGate`). Shared by clara-serve (`server.metrics`) and `clara-index serve`.

Updated from the event loop and the MLX worker thread alike, so every update takes a lock.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from fastapi.responses import PlainTextResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clara_cli.http import CLIENT_GONE, REQUEST_ID, AccessGate, loggable_path

log = logging.getLogger("clara.http")

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: Buckets of the MLX worker's phases (a decode step takes tens of milliseconds on a CPU)
PHASE_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 10.0)
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
    unlabelled 0 went away once labelled ones came: a stale series, a false `== 0`)."""

    kind = "counter"

    def __init__(self, name: str, help: str, labelled: bool = False) -> None:
        super().__init__(name, help)
        self.labelled = labelled
        self._values: dict[Labels, float] = {}

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

    def __init__(self, name: str, help: str, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        super().__init__(name, help)
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self._series: dict[Labels, list[float]] = {}  # bucket counts..., sum, count

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

    def response(self) -> PlainTextResponse:
        """GET /metrics's answer."""
        return PlainTextResponse(self.render(), media_type="text/plain; version=0.0.4")


class ServiceMetrics(MetricSet):
    """What both HTTP services export: their requests, their model worker's queue and
    readiness."""

    def __init__(self) -> None:
        self.requests = Counter(
            "clara_requests_total", "HTTP requests by endpoint and status", labelled=True
        )
        self.latency = Histogram(
            "clara_request_duration_seconds", "Time from request to the last byte, by endpoint"
        )
        self.queue_depth = Gauge("clara_queue_depth", "Jobs waiting for the MLX worker")
        self.model_ready = Gauge("clara_model_ready", "1 once the model is loaded")


class MeteredGate:
    """Pure ASGI middleware (streams and disconnects pass untouched): the shared
    `AccessGate` (host, origin, API key), then the request counted in `requests` and timed in
    `latency`, by `endpoint(path)` (a bounded set of labels) and status. A client gone before
    its answer (499) gets a log line, as uvicorn writes none."""

    def __init__(
        self,
        app: ASGIApp,
        requests: Counter,
        latency: Histogram,
        endpoint: Callable[[str], str],
        **access: Any,
    ) -> None:
        self.app = app
        self.access = AccessGate(app, **access)
        self.requests, self.latency, self.endpoint = requests, latency, endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # (the gate closes websockets, passes the lifespan)
            await self.access(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        request_id = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id  # (`Request.state`)

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:  # the gate refuses, answers an allowed origin's preflight, or calls the app
            await self.access(scope, receive, send_status)
        finally:
            REQUEST_ID.reset(token)
            endpoint = self.endpoint(scope["path"])
            if status == CLIENT_GONE:  # (uvicorn logs no access line for a client gone)
                host, port = scope.get("client") or ("?", 0)
                path = loggable_path(scope["path"])
                log.info(
                    '%s:%d - "%s %s" %d: the client closed the request before its answer '
                    "(request %s)", host, port, scope["method"], path, status, request_id,
                )  # fmt: skip
            self.requests.inc(endpoint=endpoint, status=str(status))
            self.latency.observe(time.perf_counter() - start, endpoint=endpoint)


#: a request id a client or proxy may give (X-Request-ID): short, printable, no spaces
_GIVEN_ID = re.compile(r"[!-~]{1,128}")


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
