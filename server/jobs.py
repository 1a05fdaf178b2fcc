"""A request's work on the model thread and the events its route reads: `Ready` (sources
found, the prompt fits), then `GenerationChunk`s or `Embedded`, or `Failed`; `DONE` last."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from clara_cli.worker import Task
from indexing.lexical import STOPWORDS, terms
from server.protocol import RagParams

DONE = object()  # the last event of every job


@dataclass
class SourceInfo:
    """A retrieved chunk and where it came from."""

    chunk_id: int
    document_id: str
    filename: str
    path: str | None
    page_start: int | None
    page_end: int | None
    score: float
    text: str
    collection: str
    context: str = ""  # "title / heading" the generator reads before `text`
    ranks: dict[str, int | None] = field(default_factory=dict)  # per retriever, from 1
    retrieval_mode: str = "dense"  # the mode that ranked it (hybrid falls back to dense)
    file_id: str | None = None  # the Files API upload it was indexed from, if any


@dataclass
class Retrieved:
    status: str  # ok | disabled | no_index | empty_index
    collection: str | None
    sources: list[SourceInfo] = field(default_factory=list)
    memories: np.ndarray | None = None  # (k, n_mem, d) float32, memory mode only
    detail: str | None = None  # why there are no sources
    query: str = ""  # what was searched for
    collections: list[str] = field(default_factory=list)  # every one searched, when several
    # (`collection` is then the first)

    def cited(self, answer: str) -> list[int]:
        """Positions of the sources `answer` draws on, as its words tell (the generator reads
        them all, so this is a best guess): those whose chunk holds a term of the answer the
        question did not have (the answer's own facts: "1889" to "When was the tower
        completed?"), else one of any term of the answer. Terms every source holds tell
        nothing (a language's glue words: "der", "les"). When no chunk holds one (or the
        answer has no word), the best-ranked source if it holds at least half the question's
        words, else none: "Queensland" for the capital of Australia cited a page about the
        Eiffel Tower, which chat apps then show as the answer's source."""
        if not self.sources:
            return []
        said = {t for t in terms(answer) if t not in STOPWORDS and (len(t) > 1 or t.isdigit())}
        held = [set(terms(f"{s.filename} {s.text}")) for s in self.sources]
        if len(held) > 1:
            said -= set.intersection(*held)
        asked = {t for t in terms(self.query) if t not in STOPWORDS}
        for wanted in (said - asked, said):
            found = [i for i, chunk in enumerate(held) if wanted & chunk]
            if found:
                return found
        on_topic = asked and 2 * len(asked & held[0]) >= len(asked)
        return [0] if on_topic else []


@dataclass
class Ready:
    """Retrieval done and the prompt fits: generation (prefill first) starts now."""

    retrieved: Retrieved
    prompt_positions: int


@dataclass
class Failed:
    error: BaseException


@dataclass
class Embedded:
    vectors: np.ndarray  # (N, n_mem * d) float32, unit rows
    tokens: int


class Job:
    """One request's MLX work and the event queue its awaiting route reads."""

    def __init__(self, loop: asyncio.AbstractEventLoop, kind: str, params: RagParams | None = None):
        self.loop = loop
        self.kind = kind
        self.params = params  # a chat request's parameters
        self.events: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.cut = False  # cancelled by the server's stop, not by its client
        self.created = time.perf_counter()
        self.task: Task | None = None
        self.batched = False  # handed to the decode batch, which sends its DONE
        self.checked = time.monotonic()  # when its route last looked for a hung-up client
        self.progress: tuple[int, int] | None = None  # embeddings: (inputs done, of)
        self.failed = False  # it ended in an error (its route then cancels it: not "cancelled")
        self.finished = False  # its answer ended at its first token (the route may cancel it
        # as it ends, before the worker's `done`: not "cancelled" either)
        self.on_cancel: Callable[[], None] | None = None  # told when it is cancelled (a job
        # that shares a task with others: the task stops once they all are)

    def emit(self, event: object) -> None:
        """Hand an event to the event loop (worker thread)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancel()

    def cancel(self, server_stops: bool = False) -> None:
        """Stop the work: its client left, or (`server_stops`) the server is stopping and cut
        the answer (`clara_generations_total` tells the two apart)."""
        self.cut = self.cut or server_stops
        self.cancelled.set()
        if self.task is not None:
            self.task.cancel()
        if self.on_cancel is not None:
            self.on_cancel()

    async def next(self, timeout: float | None = None) -> object | None:
        """The next event, or None after `timeout` seconds without one."""
        try:
            return await asyncio.wait_for(self.events.get(), timeout)
        except TimeoutError:
            return None
