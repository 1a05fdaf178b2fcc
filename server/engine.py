"""The engine: chat and embedding work for the one MLX worker (`clara_cli.worker`).

MLX arrays and streams belong to the thread that made them (calling MLX from FastAPI's thread
pool crashes), so loading, query encoding, prefill and decoding all run on the worker thread.
Routes start a job and await its events, which the worker hands back to the event loop with
`loop.call_soon_threadsafe`. Chat jobs are interactive work: retrieval and prefill run as one
worker task per request. Requests queued together are admitted as a group (an idle engine
waits a few milliseconds while a burst keeps arriving): one query-adapter pass for all their
questions, then batched prefills of at most `prefill_batch` of them and `prefill_tokens`
positions, each request sent its first token as its pass ends. Then it joins the continuous
decode batch (`clara.decode`), which takes one batched step per worker turn; at most
`max_batch` decode at once, the rest wait in the worker's bounded queue (full: 503 +
Retry-After).

A chat job (`server.jobs`): encode the query (query adapter) -> search the collection
(refreshed first, so documents the indexing service adds show up without a restart) and read
the hits' memories -> build the generator prompt (both `server.rag`) -> emit `Ready` ->
stream `GenerationChunk`s -> `DONE`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import numpy as np

from clara import lanes
from clara.decode import PREFILL_STEP, Decoder, PrefixCache, SequencesFailed
from clara.decode import Sequence as Seq
from clara.errors import ContextLengthError
from clara.model import ClaraModel
from clara.prompt import Prompt, memory_prompt
from clara.retrieval import flatten_normalize
from clara.settings import ModelSettings
from clara.stream import GenerationChunk, SamplingParams, check_context, context_limit
from clara.structured import check_grammar
from clara_cli.http import CALLER, is_client_error
from clara_cli.worker import BATCH, Task, Worker, log_failure
from indexing.layout import META
from indexing.manifest import MANIFEST, read_manifest
from indexing.meta import MissingDatabaseError
from indexing.pipeline import model_manifest
from indexing.store import collection_counts, list_collections
from server.jobs import DONE, Embedded, Failed, Job, Ready
from server.metrics import Metrics
from server.protocol import RagParams
from server.rag import Rag

log = logging.getLogger("clara.serve")


@dataclass
class Settings(ModelSettings):
    """What the engine serves (filled from the CLI)."""

    collection: str = "default"
    max_context: int | None = None
    queue_size: int = 16
    max_batch: int = 16  # chat requests generating at once
    #: ... of one API key (--api-key-file) at most; None: up to max_batch (--max-batch-per-key)
    max_batch_per_key: int | None = None
    prefill_batch: int = 8  # requests admitted together are prefilled at most this many at a time
    prefill_tokens: int = 320  # ... and at most this many prompt positions a pass (0: no limit)
    prefix_cache_mb: int = 256  # KV of repeated prompt prefixes each decoder keeps, at most


@dataclass
class ModelInfo:
    """What the routes need to know about the loaded model (plain data, any thread)."""

    model_id: str
    fingerprint: str
    context_limit: int
    embedding_dim: int
    manifest: dict[str, Any]
    vocab_size: int = 0  # token ids an embeddings request may send are below it
    max_token_chars: int = 0  # the longest token's characters: a text needs >= len/this tokens
    embed_tokens: int = 0  # the most tokens one embeddings input may have (query encoder)

    def least_tokens(self, chars: int) -> int:
        """The fewest tokens `chars` characters can take (0 when the vocabulary is unknown):
        no token holds more characters than the longest one."""
        return chars // self.max_token_chars if self.max_token_chars else 0


FAILED = object()  # in `_encode_apart`'s answer: that request failed and heard why


class Engine:
    """Owns the model worker and the open collections; turns requests into worker tasks."""

    def __init__(
        self, settings: Settings, metrics: Metrics | None = None, worker: Worker | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.info: ModelInfo | None = None
        self.worker = worker or Worker(
            self._load_model, max_waiting=settings.queue_size, service="the server"
        )
        self.worker.ready_hooks.append(self._loaded)
        self.worker.on_depth = self.metrics.queue_depth.set
        self._cm: ClaraModel | None = None
        self._rag: Rag | None = None  # once the model is loaded
        #: each document's attributes for attribute filters, (collection name, collection) ->
        #: {doc id: attributes}; the Files API's when it is mounted (uploads' own attributes)
        self.document_attributes: Callable[[str, Any], dict[str, dict[str, Any]]] | None = None
        # /metrics: per collection, (meta.sqlite and its WAL as last seen, its counts)
        self._counts: dict[str, tuple[Any, tuple[int, int]]] = {}
        self._damaged: set[str] = set()  # collections `index_stats` last found unreadable
        self._decoders: dict[str | None, Decoder] = {}  # by adapter (worker thread only)
        self._stepping: Task | None = None  # the decode loop, while any request decodes
        self._admitting = 0  # chat requests admitted, not yet decoding nor failed (`running`)
        self._s_per_token = 1e-3  # query encoding, measured by embeddings steps
        # embeddings requests queued and not started, by (API key, truncate): one more of
        # the same key joins it (`embed`)
        self._open_embeds: dict[tuple[str | None, bool], _EmbedBatch] = {}
        self._embed_lock = threading.Lock()

    # ---- event-loop side --------------------------------------------------------------------
    @property
    def state(self) -> str:
        return self.worker.state

    @property
    def error(self) -> BaseException | None:
        return self.worker.error

    @property
    def crashed(self) -> bool:
        return self.worker.crashed

    @property
    def on_fatal(self) -> Callable[[BaseException], None] | None:
        return self.worker.on_fatal

    @on_fatal.setter
    def on_fatal(self, fn: Callable[[BaseException], None] | None) -> None:
        self.worker.on_fatal = fn

    def start(self) -> None:
        self.worker.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Queued jobs get 503, running ones end; the worker thread stops. The collections
        are closed once it has, not under a step still reading them after `timeout`; returns
        whether it has."""
        ended = self.worker.stop(timeout)
        if self._rag is not None and ended:
            self._rag.close()
        elif self._rag is not None:
            log.warning("the model thread is still busy: its collections are left open")
        return ended

    def queue_depth(self) -> int:
        return self.worker.queue_depth()

    def check_ready(self) -> None:
        self.worker.check_ready()

    def submit(
        self,
        kind: str,
        start: Callable[[Job], Iterator[object] | None],
        can_start: Callable[[], bool] | None = None,
        params: RagParams | None = None,
        room: int = 0,
    ) -> Job:
        """Queue work for the MLX thread; a full queue is a 503 with Retry-After (`room`:
        `Worker.submit`'s)."""
        self.check_ready()
        job = Job(asyncio.get_running_loop(), kind, params)

        def done() -> None:
            if job.batched:
                return
            if kind == "chat" and job.task.cancelled and not job.failed and not job.finished:
                self.metrics.generations.inc(reason="cancelled")  # left while it waited
            if kind == "embeddings" and job.task.cancelled and not job.failed and job.progress:
                finished, total = job.progress  # (None: it never started)
                if finished < total:  # (a finished job is cancelled too, by its route)
                    log.info("embeddings cancelled after %d of %d inputs", finished, total)
            job.emit(DONE)

        def failed(exc: BaseException) -> None:
            job.failed = True  # not cancelled: nothing for `done` to count or log
            stopping = getattr(exc, "code", None) == "shutting_down"  # (a restart: no error)
            if kind == "chat" and not is_client_error(exc) and not stopping:  # (a 400: nothing
                self.metrics.generations.inc(reason="error")  # was generated)
            job.emit(Failed(exc))

        job.task = Task((":" + kind, job), lambda cm: start(job), failed, done, can_start)
        self.worker.submit(job.task, room=room)
        return job

    def chat(self, params: RagParams) -> Job:
        self.check_size(params)
        caller = CALLER.get()
        return self.submit(
            "chat",
            lambda job: self._chat(job, params),
            lambda: (
                self.decoding() < self.settings.max_batch
                and (
                    (cap := self._key_cap(caller)) == math.inf  # (no cap: nothing to count)
                    or self._running_by_key()[caller] < cap
                )
            ),
            params=params,
            room=self.settings.max_batch - self.decoding() - self._admitting,  # (a hint)
        )

    def check_size(self, params: RagParams) -> None:
        """Refuse, before any tokenizing, a prompt text too long for the context whatever its
        tokens: a text of n characters is at least n / (the longest token's characters)
        tokens. A megabyte pasted into a message is a 400 at once, instead of seconds of
        tokenizing on the model thread that every other request waits behind."""
        info = self.info
        if info is None:
            return
        texts = [params.question, params.system or ""]  # in the prompt whatever is cut
        if not params.truncate:  # (Responses' truncation "auto" may drop the old turns)
            texts += [m["content"] for m in params.history]
        chars = sum(map(len, texts))
        least = info.least_tokens(chars)
        if least > info.context_limit:
            what = "the prompt holds" if params.raw is not None else "the messages hold"
            raise ContextLengthError(  # (OpenAI's first words, as `check_context`'s)
                f"This model's maximum context length is {info.context_limit} tokens. However, "
                f"{what} {chars} characters, at least {least} tokens: shorten "
                + ("it" if params.raw is not None else "them")
            )

    def decoding(self) -> int:
        """Requests in the decode batch."""
        return sum(len(d.sequences) for d in list(self._decoders.values()))

    def _running_by_key(self) -> Counter[str | None]:
        """Requests in the decode batch by API key name."""
        return Counter(
            s.tag.task.caller for d in list(self._decoders.values()) for s in d.sequences
        )

    def _key_cap(self, caller: str | None) -> float:
        """Places in the decode batch one key's requests take at most (--max-batch-per-key;
        none without keys): one key's flood of requests took all 16, and every other key's
        chat waited behind its answers, 12x slower (a SaaS operator audit)."""
        cap = self.settings.max_batch_per_key
        return math.inf if cap is None or caller is None else cap

    def embed(self, inputs: list[str | list[int]], truncate: bool = False) -> Job:
        """Query-adapter embeddings of `inputs`; one longer than the encoder reads fails the
        job (ContextLengthError), or with `truncate` is read up to that length.

        Requests of one API key that come while another of its embeddings requests waits to
        start join it, up to EMBED_JOIN_INPUTS inputs: one task on the model's thread, one
        place in the queue, one batched encoding (an Open WebUI audit: it sends a request per
        chunk of a document, all at once, and those past the 16 places were refused)."""
        self.check_ready()
        job = Job(asyncio.get_running_loop(), "embeddings")
        key = (CALLER.get(), truncate)
        with self._embed_lock:  # (held while queued: the batch's start takes it first)
            batch = self._open_embeds.get(key)
            if batch is None or batch.inputs + len(inputs) > EMBED_JOIN_INPUTS:
                batch = _EmbedBatch()
                task = Task(
                    (":embeddings", batch),
                    lambda cm: self._embed_batch(batch, key),
                    batch.fail,
                    lambda: self._embed_ended(batch),
                )
                self.worker.submit(task)  # (a full queue: its 503, nothing joined)
                self._open_embeds[key] = batch
                batch.task = task
            batch.members.append((job, inputs))
            batch.inputs += len(inputs)
            job.on_cancel = batch.left
        return job

    def forget_collection(self, name: str) -> None:
        """Collection `name` was deleted: the copy chats have open is closed (once no request
        reads it), not kept until 64 others push it out (its files, and their disk space)."""
        if self._rag is not None:
            self._rag.forget(name)

    def index_stats(self) -> list[tuple[str, tuple[int, int] | None]]:
        """(name, (documents, chunks)) of every collection under the index root, whether or
        not a request opened it yet, read from their metadata alone (safe from any thread);
        None for one whose metadata cannot be read (damaged: said once in the log)."""
        out: list[tuple[str, tuple[int, int] | None]] = []
        damaged = set()
        for name in list_collections(self.settings.root):
            meta = self.settings.root / name / META
            manifest = self.settings.root / name / MANIFEST
            try:  # counted again only when the database changed since the last scrape (its
                key = (_stamp(meta), _stamp(f"{meta}-wal"), _stamp(manifest))  # WAL, where
            except OSError:  # writes land, is there only while a connection is open: a key
                continue  # that needed it was never whole after a restart, and each scrape
            # read all)
            cached = self._counts.get(name)
            if cached is not None and cached[0] == key:
                out.append((name, cached[1]))
                continue
            try:
                counts = collection_counts(self.settings.root, name)
                read_manifest(self.settings.root / name)  # (its manifest damaged: chats fail)
            except (MissingDatabaseError, FileNotFoundError):  # deleted or half-made under us:
                continue  # not listed now
            except Exception as exc:  # noqa: BLE001 - its files: said once, shown as damaged
                if name not in self._damaged:
                    log.warning(
                        "collection %s cannot be read (%s): chats that name it fail until "
                        "its folder %s is restored from a backup or moved away",
                        name, exc, self.settings.root / name,
                    )  # fmt: skip
                damaged.add(name)
                out.append((name, None))
                continue
            self._counts[name] = (key, counts)
            out.append((name, counts))
        self._damaged = damaged
        return out

    # ---- worker side -----------------------------------------------------------------------
    def _load_model(self) -> ClaraModel:
        self._load_start = time.perf_counter()
        return self.settings.load()

    def _loaded(self, cm: ClaraModel) -> None:
        """Ready hook: model facts for the routes, the index checked, a warm-up pass."""
        s = self.settings
        self._cm = cm
        limit = context_limit(cm, s.max_context)
        if s.max_context is not None:  # (every chat was a 400 blaming the question: an error
            least = memory_prompt(cm, "?", [mx.zeros((cm.n_mem, cm.hidden_size))]).positions
            if limit <= least:  # audit; completions and embeddings may still fit)
                log.warning(
                    "--max-context %d leaves no room for an answer to a chat: the shortest "
                    "question with one retrieved chunk takes %d positions (give at least a few "
                    "hundred, or leave --max-context out for the model's %d)",
                    limit, least, context_limit(cm),
                )  # fmt: skip
        self.info = ModelInfo(
            model_id=cm.info.model_id,
            fingerprint=cm.fingerprint,
            context_limit=limit,
            embedding_dim=cm.n_mem * cm.hidden_size,
            manifest=model_manifest(cm, s.checkpoint),  # (the fix-it names the checkpoint)
            vocab_size=len(cm.tokenizer),
            max_token_chars=max(map(len, cm.tokenizer.get_vocab()), default=0),
            embed_tokens=cm.config.doc_max_tokens,
        )
        # An index made by another checkpoint must stop the server now, not fail per request.
        self._rag = Rag(
            cm, s.root, s.collection, self.info.manifest, self.metrics, self.document_attributes
        )
        chunks = self._rag.chunks(s.collection)
        mx.eval(cm.encode_queries(["warm-up"]))
        where = s.root / s.collection
        what = "not there yet: answering without" if chunks is None else f"{chunks} chunks"
        took = time.perf_counter() - getattr(self, "_load_start", time.perf_counter())
        log.info("model ready in %.1fs; index %s: %s", took, where, what)
        self.metrics.model_ready.set(1)

    def _encode(self, group: list[RagParams]) -> list[np.ndarray | None]:
        """The query encodings of the requests that retrieve, in one query-adapter pass."""
        wanted = [i for i, p in enumerate(group) if p.retrieval and p.top_k > 0]
        out: list[np.ndarray | None] = [None] * len(group)
        if wanted:
            start = time.perf_counter()
            query = self._cm.encode_queries([group[i].query for i in wanted])  # (n, n_mem, d)
            vectors = np.array(query.astype(mx.float32))
            took = time.perf_counter() - start
            self.metrics.encode_seconds.observe(took, queries=str(len(wanted)))
            for i, v in zip(wanted, vectors):
                out[i] = v
        return out

    def _encode_apart(
        self, group: list[tuple[Job, RagParams]], fail: Callable[[Job, BaseException], None]
    ) -> list[Any]:
        """`_encode` for the group's requests together; if that pass fails, each one alone, so
        a request the query adapter cannot take fails by itself (FAILED in its place) instead
        of taking the requests admitted with it down too."""
        try:
            return self._encode([q for _, q in group])
        except Exception:
            if len(group) == 1:
                raise
        out: list[Any] = []
        for j, q in group:
            try:
                out.append(self._encode([q])[0])
            except Exception as exc:  # noqa: BLE001 - this request's own error
                fail(j, exc)
                out.append(FAILED)
        return out

    def _chat(self, job: Job, p: RagParams) -> None:
        """Admit a chat request, with the chat requests queued behind it (up to the free decode
        slots): their queries are encoded in one pass; each is retrieved for, gets its prompt
        checked and `Ready`; then they are prefilled in batched forwards (`Decoder.add_many`,
        passes cut by `prefill_groups`), sent their first tokens, and join the decode batch
        (`_decode`). Under load this saves a query-adapter pass per request (8 questions
        encode in about the time of 3 one at a time) and prefill time (2 memory prompts
        together: 0.84x the time each takes alone, bench/bench_burst.py)."""
        room = self.settings.max_batch - self.decoding() - 1
        taken = self._admit(room, job.task.caller)
        group = [(job, p)] + [(t.key[1], t.key[1].params) for t in taken]
        # (being answered from now: retrieval and prefill can take seconds, and the gauges
        # read an idle server meanwhile; `_start` counts them as decoding once they join)
        self._admitting = len(group)
        self._count_running()
        if taken:
            log.debug("admitting %d chat requests together", len(group))
        error: list[BaseException] = []

        def fail(j: Job, exc: BaseException) -> None:  # each request hears its own error
            self._admitting = max(0, self._admitting - 1)  # (not being answered any more)
            self._count_running()
            if j is job:
                error.append(exc)
                return
            log_failure("chat", exc, j.task.request_id)
            j.task.failed(exc)

        def start(adapter: str | None, part: list[tuple[Job, RagParams, Prompt]]) -> None:
            try:
                self._start(adapter, part)
            except BaseException as exc:  # noqa: BLE001
                for j, _, _ in part:
                    fail(j, exc)

        try:
            qvecs = self._encode_apart(group, fail)
            # A pass is prefilled as soon as its prompts are ready: the requests after it
            # are retrieved for once its first tokens are out (`prefill_groups`' cuts).
            pending: dict[str | None, list[tuple[Job, RagParams, Prompt]]] = {}  # by adapter
            for (j, q), qvec in zip(group, qvecs):
                try:
                    if j.cancelled.is_set():  # (a failed one was uncounted by `fail`)
                        self._admitting = max(0, self._admitting - 1)
                        continue
                    if qvec is FAILED:
                        continue
                    prompt, adapter = self._ready(j, q, qvec)
                except BaseException as exc:  # noqa: BLE001
                    fail(j, exc)
                    continue
                items = pending.setdefault(adapter, [])
                items.append((j, q, prompt))
                *full, pending[adapter] = prefill_groups(
                    items, self.settings.prefill_batch, self.settings.prefill_tokens, lanes.count()
                )
                if len(pending[adapter]) >= max(1, self.settings.prefill_batch):
                    full.append(pending[adapter])
                    pending[adapter] = []
                for part in full:
                    start(adapter, part)
            for adapter, items in pending.items():
                if items:
                    start(adapter, items)
        except BaseException as exc:
            for t in taken:
                t.failed(exc)
            raise
        finally:
            for t in taken:
                t.done()
            self._admitting = 0  # (those that failed are not answered)
            self._count_running()
        if error:
            raise error[0]

    def _admit(self, room: int, caller: str | None) -> list[Task]:
        """Up to `room` queued chat requests to admit with the one starting (of the API key
        `caller`), no key past its places in the batch (`_key_cap`). With nothing
        decoding, requests sent at once reach the worker over a few milliseconds (the event
        loop parses them one by one) and the first would otherwise be admitted alone, its
        encoding and prefill ahead of all the others: so wait while more keep arriving
        (ADMIT_POLL apart, ADMIT_WINDOW in all). While decoding, the others arrive during a
        step and are all queued already."""
        if room <= 0:
            return []
        running = self._running_by_key()
        running[caller] += 1

        def admits(key: Any) -> bool:  # (`take` takes each task it is true for: counted here)
            if not _is_chat(key):
                return False
            who = key[1].task.caller
            if running[who] >= self._key_cap(who):
                return False
            running[who] += 1
            return True

        taken = self.worker.take(admits, room)
        if self.decoding():
            return taken
        deadline = time.perf_counter() + ADMIT_WINDOW
        while len(taken) < room and time.perf_counter() < deadline:
            time.sleep(ADMIT_POLL)
            more = self.worker.take(admits, room - len(taken))
            if not more:
                break
            taken += more
        return taken

    def _ready(self, job: Job, p: RagParams, qvec: np.ndarray | None) -> tuple[Prompt, str | None]:
        """Retrieve and build the request's prompt; checked, it emits `Ready`."""
        retrieved = self._rag.retrieve(p, qvec)
        if p.raw is not None:  # a legacy completion: its prompt as it is, to the bare model
            ids = self._cm.tokenizer.encode(p.raw) if isinstance(p.raw, str) else p.raw
            prompt, adapter = Prompt(list(ids), None, continues=True), None
        else:
            prompt, adapter = self._rag.prompt(p, retrieved)
        limit = self.info.context_limit
        while prompt.positions >= limit:
            if p.truncate and p.history:  # (Responses' truncation "auto") the oldest exchange
                p.history = p.history[2:]
            elif retrieved.sources and len(retrieved.sources) > 1:  # the lowest-ranked chunk:
                retrieved.sources.pop()  # what the server added, not what the client sent (a
                if retrieved.memories is not None:  # top_k the server takes was a 400)
                    retrieved.memories = retrieved.memories[: len(retrieved.sources)]
            else:
                break
            prompt, adapter = self._rag.prompt(p, retrieved)
        if p.raw is not None:  # before Ready: the 400 precedes any byte
            check_context(prompt, limit, "shorten the prompt")
        else:
            check_context(prompt, limit)
        if p.grammar is not None:  # (with the model's tokens: what the request could not tell)
            check_grammar(self._cm.tokenizer, p.grammar)
        job.emit(Ready(retrieved, prompt.positions))
        return prompt, adapter

    def _start(self, adapter: str | None, part: list[tuple[Job, RagParams, Prompt]]) -> None:
        """Prefill `part` together, send each its first token; unfinished ones join the
        decode batch, and the decode loop starts if it is not running."""
        decoder = self._decoders.get(adapter)
        if decoder is None:
            decoder = Decoder(
                self._cm,
                adapter,
                max_context=self.settings.max_context,
                prefix_cache=PrefixCache(max_bytes=self.settings.prefix_cache_mb << 20),
            )
            self._decoders[adapter] = decoder
        start, reused = time.perf_counter(), decoder.prefix_cache.reused_positions
        started = decoder.add_many([(prompt, sampling(q), j) for j, q, prompt in part])
        took = time.perf_counter() - start
        name = adapter or "none"
        self.metrics.prefix_reused.inc(decoder.prefix_cache.reused_positions - reused, adapter=name)
        self.metrics.prefix_bytes.set(decoder.prefix_cache.nbytes, adapter=name)
        self.metrics.prefills.inc(requests=str(len(part)))
        self.metrics.prefill_seconds.observe(took, requests=str(len(part)))
        for (j, _, _), (_, first) in zip(part, started):
            j.finished = first.finish_reason is not None  # (before its route hears of it)
            j.emit(first)
            if j.finished:
                self._finished(first)
            else:
                j.batched = True
        self._admitting = max(0, self._admitting - len(part))
        self._count_running()
        if self.decoding() and self._stepping is None:
            self._stepping = Task(
                (":decode", 0), lambda cm: self._decode(), bounded=False, caller=BATCH
            )
            self.worker.submit(self._stepping)

    def _decode(self) -> Iterator[None]:
        """The decode loop: one batched step per decoder per worker turn, so requests that
        arrive meanwhile are prefilled (and join) between two steps."""
        try:
            while any(d.sequences for d in self._decoders.values()):
                for decoder in list(self._decoders.values()):
                    if not decoder.sequences:  # (another adapter's batch decodes alone)
                        continue
                    cancelled = [s for s in decoder.sequences if s.tag.cancelled.is_set()]
                    decoder.remove_many(cancelled)
                    for seq in cancelled:
                        self._cancelled(seq)
                    batch, start = len(decoder.sequences), time.perf_counter()
                    try:
                        chunks = decoder.step()
                    except SequencesFailed as part:  # those requests' own errors: the rest go on
                        chunks = part.chunks
                        for seq, exc in part.errors:
                            log_failure("chat", exc, seq.tag.task.request_id)
                            self._failed(seq, exc)
                    except Exception as exc:  # noqa: BLE001 - this batch's, not the worker's
                        self._failed_batch(decoder, exc)
                        continue
                    took = time.perf_counter() - start
                    self.metrics.step_seconds.observe(took, requests=str(batch))
                    for seq, chunk in chunks:
                        seq.tag.emit(chunk)
                        if chunk.finish_reason is not None:
                            self._finished(chunk)
                            seq.tag.emit(DONE)
                self._count_running()
                yield
        finally:  # the batch is empty, or the worker is shutting down
            for decoder in self._decoders.values():
                left = list(decoder.sequences)
                decoder.remove_many(left)
                for seq in left:  # (the worker stops: the server's doing)
                    seq.tag.cut = True
                    self._cancelled(seq)
            self._stepping = None
            self._count_running()

    def _count_running(self) -> None:
        """clara_jobs_running: the chat requests decoding, and those admitted with them that
        are still being retrieved for or prefilled."""
        self.metrics.running.set(self.decoding() + self._admitting)

    def _failed_batch(self, decoder: Decoder, exc: Exception) -> None:
        """A decode step that raised: how far its sequences got is not known any more, so
        each ends with the error, told to its client (they used to end with no finish reason,
        counted as cancelled, and every other adapter's batch with them); other batches go
        on."""
        failed = decoder.clear()
        log_failure("chat", exc, *(seq.tag.task.request_id for seq in failed))
        for seq in failed:
            self._failed(seq, exc)

    def _failed(self, seq: Seq, exc: BaseException) -> None:
        """A decoding request that ends in `exc`, told to its client (logged by the caller)."""
        self.metrics.generations.inc(reason="error")
        seq.tag.failed = True
        seq.tag.emit(Failed(exc))

    def _cancelled(self, seq: Seq) -> None:
        """A decoding request ended before its answer: its client left ("cancelled"), or the
        server stopped and cut it ("shutting_down")."""
        cut = seq.tag.cut
        self.metrics.generations.inc(reason="shutting_down" if cut else "cancelled")
        self.metrics.completion_tokens.inc(seq.text.tokens)
        self.metrics.prompt_tokens.inc(seq.text.prompt_positions)
        log.info(
            "generation %s after %d tokens (request %s)",
            "cut by the server's stop" if cut else "cancelled", seq.text.tokens,
            seq.tag.task.request_id,
        )  # fmt: skip
        seq.tag.emit(DONE)

    def _finished(self, chunk: GenerationChunk) -> None:
        self.metrics.generations.inc(reason=chunk.finish_reason)
        self.metrics.completion_tokens.inc(chunk.generation_tokens)
        self.metrics.prompt_tokens.inc(chunk.prompt_positions)

    def _embed_batch(self, batch: _EmbedBatch, key: tuple[str | None, bool]) -> Iterator[None]:
        """Embeddings of a batch's requests in steps: every request's inputs are tokenized
        and checked first (one too long fails its own request, a 400 before any encoding),
        then all are encoded a few at a time, one worker turn each, so chats decode between
        two steps and requests whose clients all left stop it at the next one. A step takes
        about EMBED_STEP_SHARED_S seconds while other work could run (measured seconds per
        token), EMBED_STEP_ALONE_S alone."""
        with self._embed_lock:  # (no request joins it from now on)
            if self._open_embeds.get(key) is batch:
                del self._open_embeds[key]
        texts, ids, members = [], [], []
        for job, inputs in batch.members:
            if job.cancelled.is_set():
                continue
            try:
                read = self._checked(inputs, truncate=key[1])
            except ContextLengthError as exc:
                batch.end(job, Failed(exc))
                continue
            members.append((job, len(texts), len(inputs)))
            texts += read[0]
            ids += read[1]
        cm = self._cm
        parts: list[np.ndarray] = []
        done = 0
        batch.progress = (0, len(texts))
        while done < len(texts):
            yield  # a turn: chats (and clients that left) are heard between two steps
            if all(job.cancelled.is_set() for job, _, _ in members):
                return
            shared = self.worker.contended() or self.decoding() > 0
            budget = EMBED_STEP_SHARED_S if shared else EMBED_STEP_ALONE_S
            end, tokens = done, 0
            while end < len(texts) and (end == done or tokens * self._s_per_token < budget):
                tokens += len(ids[end]) + cm.n_mem
                end += 1
            t0 = time.perf_counter()
            out = cm.encode_queries(texts[done:end], ids=ids[done:end])
            parts.append(flatten_normalize(np.array(out.astype(mx.float32))))
            took = (time.perf_counter() - t0) / tokens
            self._s_per_token = 0.7 * self._s_per_token + 0.3 * took
            done = end
            batch.progress = (done, len(texts))  # (for the log, if its clients leave)
        vectors = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
        for job, first, n in members:
            tokens = sum(len(t) for t in ids[first : first + n])
            batch.end(job, Embedded(vectors[first : first + n], tokens))

    def _checked(
        self, inputs: list[str | list[int]], truncate: bool
    ) -> tuple[list[str], list[list[int]]]:
        """One request's texts and token ids; one longer than the encoder reads is a
        ContextLengthError (as OpenAI: refused, not silently cut, unless `truncate`)."""
        cm = self._cm
        texts = [x if isinstance(x, str) else cm.tokenizer.decode(x) for x in inputs]
        limit = cm.config.doc_max_tokens
        ids = cm.tokenize(texts, cut=truncate)  # whole, counted once (the reference layout cuts)
        found = []
        for i, (x, read) in enumerate(zip(inputs, ids)):
            if len(read) < limit or truncate:
                continue  # nothing was cut, or cutting was asked for
            if cm.config.reference:  # its ids were cut at the limit: count the text's own
                n = len(x) if not isinstance(x, str) else len(cm.tokenizer.encode(x, **NO_SPECIALS))
            else:
                n = len(read)
            if n > limit:
                found.append((i, f"{n} tokens"))
        if found:
            raise ContextLengthError(too_long_to_embed(limit, found, len(inputs)))
        return texts, ids

    def _embed_ended(self, batch: _EmbedBatch) -> None:
        """The batch's task ended (done, failed, cancelled or never started): every request
        still waiting hears the end; one whose client left mid-way is logged."""
        with self._embed_lock:
            for key, open_batch in list(self._open_embeds.items()):
                if open_batch is batch:  # (the server stopped before it started)
                    del self._open_embeds[key]
        if batch.progress is not None and batch.progress[0] < batch.progress[1]:
            log.info("embeddings cancelled after %d of %d inputs", *batch.progress)
        for job, _ in batch.members:
            batch.end(job, None)


NO_SPECIALS = {"add_special_tokens": False}  # count a text's own tokens
#: inputs too long to embed named in its error, at most (then how many more)
NAMED_TOO_LONG = 10


def too_long_to_embed(limit: int, found: list[tuple[int, str]], inputs: int) -> str:
    """The error of an embeddings request whose inputs `found` ([(place, size)], "272
    tokens") are longer than the encoder reads: each named, so that one request tells which
    chunks to cut (a framework's index build failed at the first, then the next). OpenAI's
    first words, which clients such as litellm tell a context-length error by."""
    if inputs == 1:
        what = f"the input has {found[0][1]}"
    elif len(found) == 1:
        what = f"input {found[0][0]} has {found[0][1]}"
    else:
        named = ", ".join(f"{i} ({size})" for i, size in found[:NAMED_TOO_LONG])
        more = f" and {len(found) - NAMED_TOO_LONG} more" if len(found) > NAMED_TOO_LONG else ""
        what = f"{len(found)} of the {inputs} inputs are longer: {named}{more}"
    return (
        f"This model's maximum context length is {limit} tokens per input (its query "
        f"encoder's length), and {what}: split the text into shorter pieces, or send "
        '"truncate": true to embed its start (clara-serve --truncate-embeddings makes that '
        "the default, for clients that cannot send it)"
    )


#: Seconds of query encoding per embeddings step when nothing else could run, and while other
#: work waits or decodes: one input of ~220 tokens is ~0.3 s of the default model on 2 cores,
#: so a chat waits at most about this long for its turn.
EMBED_STEP_ALONE_S, EMBED_STEP_SHARED_S = 1.5, 0.25
#: inputs of the embeddings requests of one API key that join one task (`Engine.embed`)
EMBED_JOIN_INPUTS = 256


@dataclass
class _EmbedBatch:
    """Embeddings requests of one API key that run as one task: each request's job and its
    inputs, in the order they came."""

    members: list[tuple[Job, list[str | list[int]]]] = field(default_factory=list)
    inputs: int = 0
    progress: tuple[int, int] | None = None  # (inputs done, of), once it started
    task: Task | None = None  # its task on the model's thread

    def left(self) -> None:
        """A request's client left (or its route ended it): once every one has, the task
        stops, and one that waits gives its place in the queue back (event loop)."""
        if self.task is not None and all(job.cancelled.is_set() for job, _ in self.members):
            self.task.cancel()

    ended: set[int] = field(default_factory=set)  # ids of the jobs told their end

    def end(self, job: Job, event: object | None) -> None:
        """Tell `job` its result (or failure) and DONE, once (worker thread)."""
        if id(job) in self.ended:
            return
        self.ended.add(id(job))
        if event is not None:
            if isinstance(event, Failed):
                job.failed = True
            job.emit(event)
        job.emit(DONE)

    def fail(self, exc: BaseException) -> None:
        """The task failed, or the server stopped before it started: every request hears it."""
        for job, _ in self.members:
            self.end(job, Failed(exc))


ADMIT_POLL = 0.005  # s: an idle engine admitting a request looks this often for more ...
ADMIT_WINDOW = 0.03  # ... while they keep arriving, this long at most


def _is_chat(key: tuple) -> bool:
    return key[0] == ":chat"


def prefill_groups(items: list, most: int, positions: int, n_lanes: int = 1) -> list[list]:
    """`items` ((job, params, prompt), in arrival order) cut into consecutive prefill passes
    of at most `most` prompts and at most `positions` prompt positions (0: any). A prompt
    longer than that shares a pass only with other such prompts, one per CPU lane (`n_lanes`:
    the pass's parts run side by side, one prompt each) while lanes split them (up to
    `clara.decode.PREFILL_STEP` positions), else it gets a pass of its own.
    Smaller passes send their first tokens sooner, larger ones cost less per prompt: memory
    prompts of ~125 positions on 2 CPU cores (the parts of a pass side by side) took 110 ms
    alone, 92 ms each 2 together, 83 ms each 4 together in process (bench/bench_burst.py);
    inside clara-serve a burst of 8 got its median first token soonest in passes of 2 (189 ms
    each; passes of 4: 332 ms), the default `--prefill-tokens 320`. A burst of 8 "mixed"
    prompts (~370 positions) got its median first token after 1.55-1.85 s two to a pass on 2
    lanes, against 2.02-2.15 s one to a pass."""
    groups: list[list] = []
    size = 0
    for item in items:
        n = item[2].positions
        last = groups[-1] if groups else []
        fits = not positions or size + n <= positions
        if positions and n > positions:  # long: beside other long ones, one per lane
            fits = n <= PREFILL_STEP and len(last) < n_lanes
            fits = fits and all(positions < i[2].positions <= PREFILL_STEP for i in last)
        if last and len(last) < max(1, most) and fits:
            last.append(item)
            size += n
        else:
            groups.append([item])
            size = n
    return groups


def sampling(p: RagParams) -> SamplingParams:
    """A request's sampling parameters."""
    return SamplingParams(
        max_tokens=p.max_tokens,
        temperature=p.temperature,
        top_p=p.top_p,
        seed=p.seed,
        stop=p.stop,
        ignore_eos=p.ignore_eos,
        logprobs=p.logprobs,
        top_logprobs=p.top_logprobs,
        frequency_penalty=p.frequency_penalty,
        presence_penalty=p.presence_penalty,
        grammar=p.grammar,
    )


def _stamp(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """(mtime, size) of a file; None when it is not there (a raised OSError: another error)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size
