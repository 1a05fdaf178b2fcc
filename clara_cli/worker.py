"""The one MLX worker thread both services use (clara-serve and clara-index serve).

MLX arrays and streams belong to the thread that made them, and a model's active adapter is one
switch (a model refuses calls from another thread: `ModelThreadError`), so one thread loads the
model and runs every piece of MLX work. Work comes as
`Task`s with a priority: INTERACTIVE (chat, search, embeddings) goes before BULK
(compressing uploaded documents), except that BULK work waiting for `bulk_every_s` gets one
turn (an upload finishes under steady chat load instead of waiting for the last chat to end).
A task's `start(model)` either finishes the work or returns
an iterator; the worker then takes one `next()` per turn, rotating with the other running
tasks of the same priority, so new interactive work gets in between two steps of a long job
(between two decode steps of a batch, between two compressor batches).

Each task carries the name of the API key its request came with (`CALLER`; None without keys),
and clients share the worker by key: turns go round robin by caller, the key whose last turn
was longest ago first (one key's burst of requests no longer goes ahead of a colleague's one
question, nor do its many running jobs each take a turn between two steps of the chats' batch,
which is a caller of its own: `BATCH`), and `max_waiting` bounds each key's waiting tasks, not
all of them together (a script filling the queue gets the 503s, not everyone else).

    worker = Worker(load=lambda: load_clara(...), max_waiting=16)
    worker.start()                         # returns at once; state "loading", then "ready"
    while worker.state == "loading":       # (before then, call/submit refuse: 503-style)
        await asyncio.sleep(0.1)
    vectors = await worker.call(lambda cm: np.array(cm.encode_queries(["q"])))
    worker.submit(Task(key, start, failed, bounded=False), priority=BULK)
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain, zip_longest
from typing import Any, TypeVar

from clara.errors import ClaraError
from clara_cli.http import (
    CALLER,
    REQUEST_ID,
    APIError,
    check_ready,
    is_client_error,
    shutting_down_error,
)

log = logging.getLogger("clara.worker")
T = TypeVar("T")
INTERACTIVE, BULK = 0, 1
#: The caller of work done for every client at once (the chats' decode batch): a turn of its
#: own in each round of callers (`Worker._in_turn`).
BATCH = ":batch"
PRIORITIES = (INTERACTIVE, BULK)
#: Seconds between looks at queued tasks that cannot start yet (see `Task.can_start`).
POLL_S = 1.0
#: Under steady interactive work, BULK work that has waited this long since its last turn
#: takes one (a compressor batch: ~0.3 s of the default model on 2 cores, so uploads get ~1/7
#: of a busy worker; committing a document is one turn too: seconds for a big one).
#: Without it an upload waited for every chat and embeddings job to end: 281-614 s under a
#: soak test, with each file_search on its store stalled 120 s.
BULK_EVERY_S = 2.0


def _ignore(*_: Any) -> None:
    return None


@dataclass(eq=False)
class Task:
    """Work for the worker.

    `start(model)` runs once; if it returns an iterator, the worker steps it (one `next()`
    per turn) until it ends. `failed(exc)` hears an exception from either (or the 503 of a
    shutdown while it waited); `done()` always runs last. `can_start()` False keeps a queued
    task waiting (e.g. no free slot in the decode batch) without blocking tasks behind it.
    """

    key: Any
    start: Callable[[Any], Iterator[object] | None]
    failed: Callable[[BaseException], None] = _ignore
    done: Callable[[], None] = _ignore
    can_start: Callable[[], bool] | None = None
    cancelled: bool = False
    bounded: bool = True  # counts against `max_waiting` until it starts
    priority: int = INTERACTIVE  # set by `Worker.submit`
    steps: Iterator[object] | None = field(default=None, repr=False)
    busy: float | None = None  # seconds of its own turns, once started (for Retry-After)
    on_cancel: Callable[[], None] = field(default=_ignore, repr=False)  # set by `submit`
    request_id: str | None = field(default_factory=REQUEST_ID.get)  # the request it serves
    caller: str | None = field(default_factory=CALLER.get)  # its API key's name (fair shares)

    def cancel(self) -> None:
        self.cancelled = True
        self.on_cancel()  # (the queue-depth gauge: a waiting client that left)


class Worker:
    """Loads the model on its own thread, then runs tasks by priority until stopped."""

    def __init__(
        self,
        load: Callable[[], Any],
        *,
        max_waiting: int = 16,
        name: str = "clara-mlx",
        service: str = "the server",
        bulk_every_s: float = BULK_EVERY_S,
    ) -> None:
        self.load = load
        self.bulk_every_s = bulk_every_s
        self._bulk_since = time.monotonic()  # BULK's last turn, or since when it waits
        self.max_waiting = max(1, max_waiting)
        self.service = service
        self.state = "starting"  # starting | loading | ready | failed | stopped
        self.crashed = False  # failed after it was ready (not while loading)
        self.error: BaseException | None = None
        self.cm: Any = None  # the loaded model (worker thread only, besides plain attributes)
        # Run on the worker after loading, in order; an exception there fails the start.
        self.ready_hooks: list[Callable[[Any], None]] = []
        self.on_fatal: Callable[[BaseException], None] | None = None
        self.on_depth: Callable[[int], None] | None = None  # waiting-count changes (metrics)
        self._queues: dict[int, deque[Task]] = {p: deque() for p in PRIORITIES}
        self._waiting = 0  # bounded tasks not started yet
        self._turns = 0  # turns taken so far, and when each caller's last one was (see
        self._last_turn: dict[str | None, int] = {}  # `_in_turn`)
        self._current: Task | None = None  # the task taking its turn (out of the queues)
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._task_seconds = 1.0  # moving average of a bounded task's run, for Retry-After
        self._interactive_at = -math.inf  # when an INTERACTIVE turn last ended
        self._step_since: float | None = None  # when the step running now began

    # ---- any thread ---------------------------------------------------------------------------
    def start(self) -> None:
        self.state = "loading"
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """End the thread after the current step; tasks that never started hear a 503,
        running ones are cancelled (their iterators closed, `done()` called). Returns whether
        the thread has ended (False: a step still running after `timeout` seconds)."""
        with self._cv:
            self.state = "stopped"
            self._cv.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._drain()
            return True
        return False

    def stuck_for(self) -> float:
        """Seconds the step running now has taken (0: none runs). A step that never ends (a
        hang, not a failure) makes it grow: /health then says so (`--unhealthy-after`)."""
        since = self._step_since
        return 0.0 if since is None else time.monotonic() - since

    def poke(self) -> None:
        """Look at the queued tasks now: something a task's `can_start` waits for is done
        (any thread; without it, the worker looks each `POLL_S`)."""
        with self._cv:
            self._cv.notify_all()

    def check_ready(self) -> None:
        if self.crashed:
            raise APIError(
                503, f"{self.service}'s model worker stopped ({self.error!r}): it is stopping, "
                "to be started again", code="model_failed",
            )  # fmt: skip
        check_ready(self.state, self.error)

    def queue_depth(self) -> int:
        """Tasks waiting to start (those that count against `max_waiting`)."""
        with self._cv:
            return self._live_waiting()

    def _live_waiting(self, caller: object = all) -> int:
        """Bounded tasks waiting to start (of one `caller`, or everyone's), but those cancelled
        meanwhile (a client that left): the worker finishes them only when it next looks, which
        a long step puts off, and they held the places of new requests, which got 503 (caller
        holds the lock)."""
        queued = [t for q in self._queues.values() for t in q]
        if caller is not all:
            return sum(t.bounded and _waits(t) and t.caller == caller for t in queued)
        gone = sum(t.bounded and t.cancelled and t.steps is None for t in queued)
        return self._waiting - gone

    def submit(self, task: Task, priority: int = INTERACTIVE, room: int = 0) -> Task:
        """Queue `task`; a bounded task beyond `max_waiting` of its caller's (its API key's)
        is a 503 with Retry-After. `room`: places past those, for tasks that start at once
        when their turn comes (the chat engine's free places in its decode batch: requests
        sent together to an idle server are all queued before the first starts, and a burst
        of max-batch + queue-size had 503s; 3 at once with --max-batch 2 --queue-size 2).
        Other threads get the 503 of `check_ready` until the model is loaded."""
        if threading.current_thread() is not self._thread:
            self.check_ready()
        if priority == BULK:  # (an indexing job outlives the request that queued it: its
            task.request_id = None  # failure, minutes on, is logged by file and store)
        with self._cv:
            if task.bounded:
                own = self._live_waiting(task.caller)
                if own >= self.max_waiting + max(0, room):
                    # its next place frees after its own waiting ones, each a round of the
                    # keys waiting (with one caller: all that wait)
                    ahead = min(self._live_waiting(), own * len(self._waiting_callers()))
                    wait = max(1, round(self._task_seconds * (ahead + 1)))
                    whose = f" with key {task.caller}" if task.caller else ""
                    raise APIError(
                        503,
                        f"{self.service} is busy ({own} request{'s' * (own != 1)}{whose} "
                        "waiting); retry later",
                        code="server_overloaded",
                        headers={"Retry-After": str(wait)},
                    )
                self._waiting += 1
            task.priority = priority
            task.on_cancel = self._depth_changed
            if priority == BULK and not self._queues[BULK]:
                self._bulk_since = time.monotonic()  # BULK waits from now (see `_next`)
            self._queues[priority].append(task)
            self._cv.notify()
        self._depth_changed()
        return task

    async def call(self, fn: Callable[[Any], T], priority: int = INTERACTIVE) -> T:
        """Run `fn(model)` on the worker and await its result (a bounded task)."""
        future = asyncio.get_running_loop().create_future()
        task = Task(
            key=(":call", id(future)),  # ":" starts no collection name
            start=lambda cm: deliver(future, fn(cm), None),
            failed=lambda exc: deliver(future, None, exc),
        )
        self.submit(task, priority)
        try:
            return await future
        except asyncio.CancelledError:
            task.cancel()
            raise

    def cancel(self, match: Callable[[Any], bool]) -> None:
        """Cancel queued and running tasks whose key matches; a running one stops before its
        next step (call it from the worker to be sure it takes no other step)."""
        with self._cv:
            for task in self._all():
                if match(task.key):
                    task.cancelled = True

    def interactive_idle(self) -> float:
        """Seconds since an INTERACTIVE turn last ended (inf: none yet): BULK work takes
        shorter steps while chats come and go (a chat arriving waits for the step under way)."""
        return time.monotonic() - self._interactive_at

    def contended(self, priority: int = INTERACTIVE) -> bool:
        """Whether a task of `priority` or higher could take a turn now (a started one between
        two steps, or one free to start); worker thread only, as `can_start` may ask it."""
        with self._cv:
            return any(
                not t.cancelled and (t.steps is not None or t.can_start is None or _can_start(t))
                for p in PRIORITIES[: priority + 1]
                for t in self._queues[p]
            )

    def pending(self, match: Callable[[Any], bool]) -> bool:
        with self._cv:
            return any(match(t.key) and not t.cancelled for t in self._all())

    def take(self, match: Callable[[Any], bool], limit: int) -> list[Task]:
        """Take up to `limit` queued tasks whose key `match`es (not started, not cancelled, in
        turn: `_in_turn`) out of the queue, for the task running now to do alongside its own
        work (the chat engine admits requests that arrived together as one group). Worker
        thread only; the caller must run each one's `failed` (on an error) and `done`."""
        taken: list[Task] = []
        with self._cv:
            for priority in PRIORITIES:
                for task in self._in_turn(self._queues[priority]):
                    if len(taken) >= limit:
                        break
                    if _waits(task) and match(task.key):
                        self._queues[priority].remove(task)
                        if task.bounded:
                            self._waiting -= 1
                        self._took_turn(task)
                        taken.append(task)
        if taken:
            self._depth_changed()
        return taken

    def _in_turn(self, queue: Iterable[Task]) -> list[Task]:
        """`queue`'s tasks in the order they take their turns (caller holds the lock): round
        robin by caller, the caller whose last turn was longest ago (or never) first, each
        caller's own in queue order (a started task's step requeues it at the back). Turns,
        not only starts: a key's many running embeddings jobs took a turn each between two
        steps of the chats' batch, which is a caller of its own (`BATCH`), and a colleague's
        answer came 30-40x slower. With one caller this is queue order; a cancelled task
        keeps its place and holds no caller's turn."""
        queue = list(queue)
        by_caller: dict[str | None, list[Task]] = {}
        for task in queue:
            if not task.cancelled:
                by_caller.setdefault(task.caller, []).append(task)
        if len(by_caller) < 2:
            return queue
        callers = sorted(by_caller, key=lambda c: self._last_turn.get(c, -1))
        rounds = zip_longest(*(by_caller[c] for c in callers))
        live = (t for t in chain.from_iterable(rounds) if t is not None)
        return [t if t.cancelled else next(live) for t in queue]

    def _waiting_callers(self) -> set[str | None]:
        """The callers with tasks waiting to start (caller holds the lock)."""
        return {t.caller for q in self._queues.values() for t in q if _waits(t) and t.bounded}

    def _took_turn(self, task: Task) -> None:
        """Count a turn (a start or a step) of `task`'s caller (caller holds the lock)."""
        self._turns += 1
        self._last_turn[task.caller] = self._turns

    def _queued(self) -> bool:
        return any(self._queues.values())

    def _all(self) -> list[Task]:
        current = [self._current] if self._current is not None else []
        return current + [t for q in self._queues.values() for t in q]

    # ---- worker thread -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            model = self.load()
            _keep_wired()
            self.cm = model
            for hook in self.ready_hooks:
                hook(model)
            with self._cv:
                if self.state == "stopped":  # stopped while loading
                    return
                self.state = "ready"
        except BaseException as exc:  # noqa: BLE001 - reported by the CLI, which exits
            self.state, self.error = "failed", exc
            log.error("could not start: %s", exc)
            if self.on_fatal is not None:
                self.on_fatal(exc)
            return
        log.info("model ready")
        try:
            self._serve()
        except BaseException as exc:  # noqa: BLE001 - a bug outside any task's own work
            # (a container audit: the thread died, /health said ok and every request hung):
            # failed, the queue told, the server stopped for its supervisor to start again
            self.state, self.error, self.crashed = "failed", exc, True
            log.critical("the model worker stopped: %r; the server stops", exc, exc_info=exc)
            with self._cv:  # (the task it was running is told too)
                if self._current is not None:
                    self._queues[self._current.priority].appendleft(self._current)
                    self._current = None
            self._drain()
            if self.on_fatal is not None:
                self.on_fatal(exc)

    def _serve(self) -> None:
        """Run tasks until stopped, then `_drain`."""
        while True:
            with self._cv:
                task = self._next()
                while task is None and self.state != "stopped":
                    # a queued task may wait on something outside (another process's lock):
                    # look again each second even when nothing is submitted
                    self._cv.wait(timeout=POLL_S if self._queued() else None)
                    task = self._next()
                if self.state == "stopped":
                    if task is not None:  # taken as stop() came: `_drain` must tell it too
                        self._queues[task.priority].appendleft(task)
                    break
                started = task.steps is not None
                if not task.cancelled:
                    self._took_turn(task)
                if not started and task.bounded:
                    self._waiting -= 1
                self._current = task
            if not started:
                self._depth_changed()
            self._turn(task, started)
            with self._cv:
                self._current = None
        self._drain()

    def _next(self) -> Task | None:
        """The task to run now (caller holds the lock): the first runnable in turn
        (`_in_turn`) of the highest priority, or of BULK when it has waited `bulk_every_s`;
        cancelled tasks that never started are finished on the way."""
        now = time.monotonic()
        order = PRIORITIES
        if now - self._bulk_since >= self.bulk_every_s:
            order = (BULK, INTERACTIVE)  # its share: one turn, then interactive first again
        for priority in order:
            q = self._queues[priority]
            for task in self._in_turn(q):
                if task.steps is None and task.can_start is not None and not task.cancelled:
                    if not _can_start(task):
                        continue
                q.remove(task)
                return task
        return None

    def _turn(self, task: Task, started: bool) -> None:
        """Start `task` or take one step of it; requeue it at the back if it goes on."""
        t0 = time.perf_counter()
        self._step_since = time.monotonic()
        more = False
        try:
            if task.cancelled:
                if task.steps is not None:
                    task.steps.close()
            elif not started:
                steps = task.start(self.cm)
                if steps is not None:
                    task.steps = iter(steps)
                    more = True
            else:
                next(task.steps)
                more = True
        except StopIteration:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the task
            log_failure(_kind(task.key), exc, task.request_id)
            _quietly(task.failed, exc)
        finally:
            self._step_since = None
        if started or not task.cancelled:  # its own time, not the turns of others between
            task.busy = (task.busy or 0.0) + time.perf_counter() - t0
        if task.priority == INTERACTIVE:
            self._interactive_at = time.monotonic()
        if task.priority == BULK:  # its next forced turn counts from the end of this one: a
            with self._cv:  # step longer than bulk_every_s took every turn when it counted
                self._bulk_since = time.monotonic()  # from the start
        if more:
            with self._cv:
                self._queues[task.priority].append(task)
                self._current = None
            return
        if task.bounded and task.busy is not None:  # over all its steps
            self._task_seconds = 0.8 * self._task_seconds + 0.2 * task.busy
        with self._cv:
            self._current = None  # finished: `done` may ask what is still pending
        _quietly(task.done)

    def _drain(self) -> None:
        """After the loop ends: fail what never started, close what was running."""
        with self._cv:
            tasks = [t for q in self._queues.values() for t in q]
            for q in self._queues.values():
                q.clear()
            self._waiting = 0
        gone = shutting_down_error(f"{self.service} is shutting down")
        for task in tasks:
            try:
                if task.steps is not None:
                    task.steps.close()
                else:
                    task.failed(gone)
            except Exception:  # noqa: BLE001 - shutting down: nothing left to tell
                log.exception("closing task %s", task.key)
            _quietly(task.done)

    def _depth_changed(self) -> None:
        if self.on_depth is not None:
            self.on_depth(self.queue_depth())


def _keep_wired() -> None:
    """On Metal, let MLX keep up to the GPU's recommended working set wired (resident) for the
    worker's life, as mlx-lm's generation does around each call: a model near the Mac's memory
    size otherwise pages out between requests. Nothing elsewhere."""
    import mlx.core as mx

    try:
        if not mx.metal.is_available():
            return
        limit = int(mx.device_info()["max_recommended_working_set_size"])
        mx.set_wired_limit(limit)
        log.info("Metal: up to %.1f GiB kept wired", limit / 2**30)
    except Exception as exc:  # noqa: BLE001 - an MLX without these keeps its default
        log.warning("could not set MLX's wired memory limit: %s", exc)


def _quietly(fn: Callable[..., Any], *args: Any) -> None:
    """A task's `failed` or `done`, which must not end the model thread: one that fails
    itself (recording an error on a full disk) is logged, and the worker goes on. Before,
    that killed the thread, and every later request hung while /health said ok."""
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - logged; the worker serves the others
        log.exception("a task's %s failed", getattr(fn, "__name__", "callback"))


def log_failure(what: str, exc: BaseException, *request_ids: str | None) -> None:
    """Log a failed request's error: nothing for a 4xx (the client's to fix), one line for a
    known condition (a library or API error says what is wrong: a damaged collection fails
    every request alike), a traceback for anything else; named by the ids of the requests it
    failed (X-Request-ID), as the access log and the client's answer name them."""
    if is_client_error(exc):
        return
    ids = [i for i in request_ids if i]
    named = f" (request{'s' if len(ids) > 1 else ''} {', '.join(ids)})" if ids else ""
    if isinstance(exc, (ClaraError, APIError)):
        log.error("%s request failed%s: %s", what, named, exc)
    else:
        log.error("%s request failed%s", what, named, exc_info=exc)


def _kind(key: Any) -> str:
    """What a task is, for the log: "chat" of the key (":chat", job), else the whole key
    (the index service's (store id, file id))."""
    if isinstance(key, tuple) and key and isinstance(key[0], str) and key[0][:1] == ":":
        return key[0][1:]
    return str(key)


def deliver(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    """Resolve an event-loop future from the worker thread."""

    def put() -> None:
        if future.done():  # the awaiting route went away
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    try:
        future.get_loop().call_soon_threadsafe(put)
    except RuntimeError:  # the event loop is closed
        pass


def _waits(task: Task) -> bool:
    """Whether a queued task waits for its first turn (not started, not cancelled)."""
    return task.steps is None and not task.cancelled


def _can_start(task: Task) -> bool:
    """`task.can_start()`; one that raises lets the task start, where its error reaches its
    caller (raised here, it ended the worker thread: /health said ok and every request after
    it waited for ever)."""
    try:
        return bool(task.can_start())
    except Exception as exc:  # noqa: BLE001
        log.warning("%s: its start check failed (%s): starting it", _kind(task.key), exc)
        return True
