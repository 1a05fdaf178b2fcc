"""Prometheus metrics in the text exposition format (a few counters, gauges and histograms).

Updated from the event loop and the MLX worker thread alike, so every update takes a lock.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence

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


class Metrics:
    """Every metric the service exports."""

    def __init__(self) -> None:
        self.requests = Counter(
            "clara_requests_total", "HTTP requests by endpoint and status", labelled=True
        )
        self.latency = Histogram(
            "clara_request_duration_seconds", "Time from request to the last byte, by endpoint"
        )
        self.ttft = Histogram(
            "clara_time_to_first_token_seconds",
            "Time from request to the first generated token (queueing, retrieval, prefill)",
        )
        self.prompt_tokens = Counter(
            "clara_prompt_tokens_total", "Prompt positions the generator read (memory slots count)"
        )
        self.completion_tokens = Counter("clara_completion_tokens_total", "Tokens generated")
        self.generations = Counter(
            "clara_generations_total",
            "Generations by how they ended (stop, length, cancelled, error)",
            labelled=True,
        )
        self.retrievals = Counter("clara_retrievals_total", "Retrievals by status", labelled=True)
        self.prefills = Counter(
            "clara_prefill_passes_total",
            "Generator prefill passes, by how many requests each held (requests admitted "
            "together are prefilled as one batch)",
            labelled=True,
        )
        self.prefix_reused = Counter(
            "clara_prefix_cache_reused_positions_total",
            "Prompt positions prefilled from the prefix cache instead of computed, by adapter",
            labelled=True,
        )
        self.prefix_bytes = Gauge(
            "clara_prefix_cache_bytes",
            "KV states the prefix cache holds, by adapter",
            labelled=True,
        )
        self.encode_seconds = Histogram(
            "clara_query_encode_seconds",
            "Query-adapter passes, by how many questions each encoded together",
            PHASE_BUCKETS,
        )
        self.prefill_seconds = Histogram(
            "clara_prefill_seconds",
            "Generator prefill passes (to each request's first token), by requests per pass",
            PHASE_BUCKETS,
        )
        self.step_seconds = Histogram(
            "clara_decode_step_seconds",
            "Batched decode steps, by how many requests each step decoded",
            PHASE_BUCKETS,
        )
        self.queue_depth = Gauge("clara_queue_depth", "Jobs waiting for the MLX worker")
        self.running = Gauge(
            "clara_jobs_running", "Chat requests being answered now (prefilling or decoding)"
        )
        self.model_ready = Gauge("clara_model_ready", "1 once the model is loaded")
        self.index_documents = Gauge(
            "clara_index_documents", "Documents in the collection", labelled=True
        )
        self.index_chunks = Gauge(
            "clara_index_chunks", "Chunks (memory vectors) in the collection", labelled=True
        )

    def all(self) -> Iterable[_Metric]:
        return [v for v in vars(self).values() if isinstance(v, _Metric)]

    def render(self) -> str:
        lines: list[str] = []
        for metric in self.all():
            lines += metric.render()
        return "\n".join(lines) + "\n"
