"""The metrics clara-serve exports (`Metrics`); the kinds and their text format are
`clara_cli.metrics`'."""

from __future__ import annotations

from clara_cli.metrics import (
    LATENCY_BUCKETS,
    PHASE_BUCKETS,
    Counter,
    Gauge,
    Histogram,
    ServiceMetrics,
)

__all__ = ["LATENCY_BUCKETS", "PHASE_BUCKETS", "Counter", "Gauge", "Histogram", "Metrics"]


class Metrics(ServiceMetrics):
    """Every metric clara-serve exports; with the Files API, its uploads' too (`files`)."""

    def __init__(self) -> None:
        super().__init__()
        self.ttft = Histogram(  # (unlabelled: 0 from the start)
            "clara_time_to_first_token_seconds",
            "Time from request to the first generated token (queueing, retrieval, prefill)",
        )
        self.prompt_tokens = Counter(
            "clara_prompt_tokens_total", "Prompt positions the generator read (memory slots count)"
        )
        self.completion_tokens = Counter("clara_completion_tokens_total", "Tokens generated")
        self.embedding_inputs = Counter(
            "clara_embedding_inputs_total", "Inputs /v1/embeddings encoded (they share the model)"
        )
        self.embedding_tokens = Counter(
            "clara_embedding_tokens_total", "Tokens of the inputs /v1/embeddings encoded"
        )
        self.generations = Counter(
            "clara_generations_total",
            "Generations by how they ended (stop, length, cancelled: the client left, "
            "shutting_down: the server stopped and cut it, error)",
            known=[
                {"reason": r} for r in ("stop", "length", "cancelled", "shutting_down", "error")
            ],
        )
        self.retrievals = Counter(
            "clara_retrievals_total",
            "Retrievals by status",
            known=[{"status": s} for s in ("ok", "no_index", "empty_index", "no_match", "error")],
        )
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
            labelled=True,
        )
        self.prefill_seconds = Histogram(
            "clara_prefill_seconds",
            "Generator prefill passes (to each request's first token), by requests per pass",
            PHASE_BUCKETS,
            labelled=True,
        )
        self.step_seconds = Histogram(
            "clara_decode_step_seconds",
            "Batched decode steps, by how many requests each step decoded",
            PHASE_BUCKETS,
            labelled=True,
        )
        self.running = Gauge(
            "clara_jobs_running", "Chat requests being answered now (prefilling or decoding)"
        )
        self.index_documents = Gauge(
            "clara_index_documents", "Documents in the collection", labelled=True
        )
        self.index_chunks = Gauge(
            "clara_index_chunks", "Chunks (memory vectors) in the collection", labelled=True
        )
        self.index_damaged = Gauge(
            "clara_index_damaged",
            "1 for a collection whose files cannot be read (the server log says which and "
            "what to do); a deleted one is simply gone",
            labelled=True,
        )
