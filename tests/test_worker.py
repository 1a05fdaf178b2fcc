"""The shared MLX worker (clara_cli.worker): priorities, steps, the bounded queue, load failure,
cancel and shutdown. A plain object stands in for the model: scheduling is what is tested."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from clara_cli.http import CALLER, REQUEST_ID, APIError
from clara_cli.worker import BULK, INTERACTIVE, Task, Worker


def ready_worker(**kw) -> Worker:
    worker = Worker(lambda: "model", **kw)
    worker.start()
    deadline = time.monotonic() + 10
    while worker.state != "ready" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.state == "ready"
    return worker


def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def test_interactive_work_goes_between_steps_of_bulk_work() -> None:
    worker = ready_worker()
    log: list[str] = []
    gate = threading.Event()

    def bulk(cm):
        for i in range(3):
            log.append(f"bulk{i}")
            gate.wait(5) if i == 0 else None
            yield

    finished = threading.Event()
    worker.submit(Task("bulk", bulk, done=finished.set, bounded=False), BULK)
    wait_until(lambda: log == ["bulk0"])
    worker.submit(Task("chat", lambda cm: log.append(f"chat:{cm}")), INTERACTIVE)
    gate.set()
    assert finished.wait(5)
    assert log == ["bulk0", "chat:model", "bulk1", "bulk2"]
    worker.stop()


def test_call_returns_the_result_or_raises_the_error() -> None:
    worker = ready_worker()

    async def run():
        ok = await worker.call(lambda cm: cm.upper())
        with pytest.raises(ValueError, match="bad input"):
            await worker.call(lambda cm: (_ for _ in ()).throw(ValueError("bad input")))
        return ok

    assert asyncio.run(run()) == "MODEL"
    worker.stop()


def test_full_queue_is_one_503_with_retry_after_and_can_start_holds_a_task() -> None:
    worker = ready_worker(max_waiting=2)
    release = threading.Event()
    worker.submit(Task("busy", lambda cm: release.wait(5)))
    wait_until(lambda: worker.queue_depth() == 0)  # started
    slot = {"free": False}
    ran: list[str] = []
    worker.submit(Task("held", lambda cm: ran.append("held"), can_start=lambda: slot["free"]))
    worker.submit(Task("next", lambda cm: ran.append("next")))
    with pytest.raises(APIError) as info:
        worker.submit(Task("third", lambda cm: None))
    err = info.value
    assert err.status == 503 and err.code == "server_overloaded"
    assert int(err.headers["Retry-After"]) >= 1
    worker.submit(Task("unbounded", lambda cm: ran.append("unbounded"), bounded=False))
    release.set()
    wait_until(lambda: ran == ["next", "unbounded"])  # the held task does not block them
    slot["free"] = True
    worker.submit(Task("poke", lambda cm: None, bounded=False))  # wakes the worker up
    wait_until(lambda: ran == ["next", "unbounded", "held"])
    worker.stop()


def test_room_lets_tasks_that_start_at_once_past_the_queue_bound() -> None:
    """A burst to an idle chat server is queued whole before the first request starts: with
    --max-batch 2 --queue-size 2, the third of three requests was a 503. The free places in
    the decode batch (`room`) are not places in the queue."""
    worker = ready_worker(max_waiting=1)
    release = threading.Event()
    worker.submit(Task("busy", lambda cm: release.wait(5)))
    wait_until(lambda: worker.queue_depth() == 0)  # started: the rest wait
    for name in ("a", "b", "c"):
        worker.submit(Task(name, lambda cm: None), room=2)
    with pytest.raises(APIError) as info:
        worker.submit(Task("d", lambda cm: None), room=2)
    assert info.value.status == 503 and "3 requests waiting" in str(info.value)
    with pytest.raises(APIError):  # (no room: the queue's own bound)
        worker.submit(Task("e", lambda cm: None))
    release.set()
    wait_until(lambda: worker.queue_depth() == 0)
    worker.stop()


def test_a_start_check_that_raises_does_not_end_the_worker() -> None:
    """It ended the worker thread: /health said ok, and every request after waited for ever
    (an engine review)."""
    worker = ready_worker()
    ran: list[str] = []

    def broken() -> bool:
        raise RuntimeError("the check broke")

    worker.submit(Task("checked", lambda cm: ran.append("checked"), can_start=broken))
    worker.submit(Task("after", lambda cm: ran.append("after")))
    wait_until(lambda: ran == ["checked", "after"])
    assert worker._thread.is_alive() and worker.state == "ready"
    worker.stop()


def test_cancel_skips_a_waiting_task_and_stops_a_running_one() -> None:
    worker = ready_worker()
    release = threading.Event()
    steps: list[int] = []
    closed = threading.Event()

    def long(cm):
        try:
            for i in range(1000):
                steps.append(i)
                release.wait(5)
                yield
        finally:
            closed.set()

    worker.submit(Task(("store", "a"), long))
    wait_until(lambda: steps == [0])
    skipped: list[str] = []
    done = threading.Event()
    worker.submit(Task(("store", "b"), lambda cm: skipped.append("ran"), done=done.set))
    assert worker.pending(lambda key: key == ("store", "b"))
    worker.cancel(lambda key: key[0] == "store")
    release.set()
    assert closed.wait(5) and done.wait(5)
    assert skipped == [] and len(steps) <= 2
    assert not worker.pending(lambda key: True)
    worker.stop()


def test_a_failed_load_is_reported_and_refuses_work() -> None:
    fatal: list[BaseException] = []

    def load():
        raise RuntimeError("no weights at /nowhere")

    worker = Worker(load)
    worker.on_fatal = fatal.append
    worker.start()
    wait_until(lambda: fatal)
    assert worker.state == "failed" and "nowhere" in str(worker.error) and fatal == [worker.error]
    with pytest.raises(APIError) as info:
        worker.submit(Task("x", lambda cm: None))
    assert info.value.code == "model_failed"


def test_a_worker_whose_loop_breaks_fails_its_work_and_stops_the_server() -> None:
    """A container audit: the model thread died of a bug outside any task (its loop), while
    /health said ok and every request waited for ever. Now it is failed (/health's 503), the
    waiting work is told, and `on_fatal` stops the server for its supervisor to restart."""
    fatal: list[BaseException] = []
    worker = ready_worker()
    worker.on_fatal = fatal.append
    gate = threading.Event()
    worker.submit(Task("running", lambda cm: gate.wait(10)))
    wait_until(lambda: worker._current is not None)
    told: list[BaseException] = []
    waiting = Task("waiting", lambda cm: None)
    waiting.failed = told.append
    worker.submit(waiting)

    def broken() -> None:
        raise RuntimeError("a bug in the loop")

    worker._next = broken  # (the next look at the queue breaks)
    gate.set()
    wait_until(lambda: fatal)
    assert worker.state == "failed" and worker.crashed and "a bug" in repr(fatal[0])
    assert told and not worker._thread.is_alive()
    with pytest.raises(APIError) as info:
        worker.check_ready()
    assert info.value.code == "model_failed" and "model worker stopped" in info.value.message


def test_work_before_the_model_is_loaded_is_a_503() -> None:
    release = threading.Event()
    worker = Worker(lambda: release.wait(5) and "model")
    worker.start()
    with pytest.raises(APIError) as info:
        worker.submit(Task("x", lambda cm: None))
    assert info.value.code == "model_loading" and info.value.headers["Retry-After"]
    release.set()
    worker.stop()


def test_stop_fails_waiting_tasks_and_closes_running_ones() -> None:
    worker = ready_worker()
    started = threading.Event()
    closed = threading.Event()

    def long(cm):
        try:
            started.set()
            while True:
                time.sleep(0.01)
                yield
        finally:
            closed.set()

    errors: list[BaseException] = []
    worker.submit(Task("long", long))
    assert started.wait(5)
    worker.submit(Task("waiting", lambda cm: None, failed=errors.append, can_start=lambda: False))
    worker.stop()
    assert closed.is_set()
    assert len(errors) == 1 and errors[0].code == "shutting_down"
    with pytest.raises(APIError):
        worker.submit(Task("late", lambda cm: None))


def test_a_task_taken_as_stop_comes_still_hears_the_shutdown() -> None:
    """Before: a task the worker had just taken from the queue when stop() came was dropped,
    neither failed nor done, and its client waited for good."""
    worker = ready_worker()
    errors: list[BaseException] = []
    finished = threading.Event()

    def stop_now() -> bool:  # stop() arriving between the pick and the run
        worker.stop()  # (from the worker thread: it does not wait for itself)
        return True

    worker.submit(Task("x", lambda cm: None, errors.append, finished.set, can_start=stop_now))
    assert finished.wait(5)
    assert len(errors) == 1 and errors[0].code == "shutting_down"


def test_take_hands_queued_tasks_to_the_running_one() -> None:
    """A running task takes matching queued tasks (in order, up to a limit, none cancelled)
    out of the queue; the rest still run on their own turns."""
    worker = ready_worker(max_waiting=8)
    release = threading.Event()
    taken: list[list] = []
    ran: list[str] = []

    def leader(cm):
        release.wait(5)
        tasks = worker.take(lambda key: key[0] == "chat", 2)
        taken.append([t.key for t in tasks])
        for t in tasks:
            t.done()

    finished = threading.Event()
    worker.submit(Task(("chat", 0), leader))
    wait_until(lambda: worker.queue_depth() == 0)
    for i in (1, 2, 3, 4):
        worker.submit(Task(("chat", i), lambda cm, i=i: ran.append(f"chat{i}")))
    worker.submit(Task(("other", 5), lambda cm: ran.append("other"), done=finished.set))
    worker.cancel(lambda key: key == ("chat", 1))
    assert worker.queue_depth() == 4  # the cancelled one waits for nobody
    release.set()
    assert finished.wait(5)
    wait_until(lambda: "chat4" in ran)
    assert taken == [[("chat", 2), ("chat", 3)]]
    assert ran == ["chat4", "other"]
    assert worker.queue_depth() == 0
    worker.stop()


def test_failures_are_logged_by_kind(caplog: pytest.LogCaptureFixture) -> None:
    """A client's 4xx is not logged; a known condition (a damaged collection fails every
    request alike) is one line; anything unexpected keeps its traceback."""
    from clara.errors import ContextLengthError, DamagedCollectionError

    worker = ready_worker()
    heard: list[BaseException] = []
    errors = [
        ContextLengthError("too long"),
        DamagedCollectionError("collection 'x' is damaged (meta.sqlite is missing)"),
        RuntimeError("a bug"),
    ]
    try:
        with caplog.at_level("ERROR", logger="clara.worker"):
            for i, exc in enumerate(errors):

                def start(cm, exc=exc):
                    raise exc

                asked = REQUEST_ID.set(f"req_{i}")  # (as the gate sets it for a request)
                try:
                    worker.submit(Task((":chat", i), start, heard.append))
                finally:
                    REQUEST_ID.reset(asked)
            wait_until(lambda: len(heard) == 3)
    finally:
        worker.stop()
    assert heard == errors  # each task hears its own error, whatever is logged
    records = [(r.getMessage(), r.exc_info is not None) for r in caplog.records]
    assert records == [
        (
            "chat request failed (request req_1): "
            "collection 'x' is damaged (meta.sqlite is missing)",
            False,
        ),
        ("chat request failed (request req_2)", True),
    ]


def test_contended_counts_only_work_that_could_take_a_turn_now() -> None:
    """What an embeddings step asks before sizing itself: a queued upload (BULK), a task that
    cannot start yet, or a cancelled one does not make it take small steps."""
    worker = ready_worker()
    seen: list[bool] = []
    gate = threading.Event()

    ran: list[str] = []

    def probe(cm):
        seen.append(worker.contended() or "bulk" in ran)  # the upload waits, not counted
        yield
        gate.wait(5)
        seen.append(worker.contended())

    hold = threading.Event()
    try:  # all queued while the worker is busy: the idle worker would start "bulk" at once
        worker.submit(Task("hold", lambda cm: hold.wait(5)))
        wait_until(lambda: worker._current is not None)
        worker.submit(Task("bulk", lambda cm: ran.append("bulk")), BULK)  # after the probe
        worker.submit(Task("later", lambda cm: None, can_start=lambda: False))
        gone = worker.submit(Task("gone", lambda cm: None))
        gone.cancel()
        worker.submit(Task("probe", probe))
        hold.set()
        wait_until(lambda: len(seen) == 1)
        worker.submit(Task("chat", lambda cm: None))  # interactive, free to start
        gate.set()
        wait_until(lambda: len(seen) == 2)
    finally:
        worker.stop()
    assert seen == [False, True]


def test_bulk_work_gets_a_turn_under_steady_interactive_work() -> None:
    """Before: an upload's compression waited until no chat or embeddings step was queued,
    which under steady load was minutes. Now BULK waiting `bulk_every_s` takes one turn."""
    worker = Worker(lambda: "model", bulk_every_s=0.2)
    worker.start()
    wait_until(lambda: worker.state == "ready")
    log: list[str] = []
    stop = threading.Event()

    def busy(cm):  # a decode loop that never runs dry
        while not stop.is_set():
            log.append("chat")
            time.sleep(0.01)
            yield

    def bulk(cm):
        for i in range(3):
            log.append(f"bulk{i}")
            yield

    try:
        worker.submit(Task("chat", busy))
        wait_until(lambda: "chat" in log)
        worker.submit(Task("upload", bulk), BULK)
        wait_until(lambda: "bulk2" in log, timeout=5)
    finally:
        stop.set()
        worker.stop()
    first, last = log.index("bulk0"), log.index("bulk2")
    assert log[first:last].count("chat") >= 3  # one bulk turn per ~0.2 s, not all at once
    assert log[first + 1] == "chat"


def test_bulk_waits_from_its_submission_and_retry_after_counts_own_time() -> None:
    """After an idle spell a new upload does not go before a queued chat (BULK's wait starts
    when it is queued); a stepped task's time for Retry-After is its own turns, not the turns
    of others between them (a long embeddings job made Retry-After minutes)."""
    worker = Worker(lambda: "model", bulk_every_s=0.2)
    worker.start()
    wait_until(lambda: worker.state == "ready")
    log: list[str] = []
    gate = threading.Event()

    def slow_other(cm):  # another task's long turns, between the stepped task's
        for _ in range(3):
            time.sleep(0.2)
            yield

    def stepped(cm):
        for _ in range(3):
            yield

    try:
        time.sleep(0.3)  # idle longer than bulk_every_s
        worker.submit(Task("hold", lambda cm: gate.wait(5)))
        wait_until(lambda: worker._current is not None)
        time.sleep(0.3)  # a long turn, begun with no BULK queued
        ended = [threading.Event(), threading.Event()]  # done: their seconds are recorded
        worker.submit(Task("upload", lambda cm: log.append("upload"), done=ended[0].set), BULK)
        worker.submit(Task("chat", lambda cm: log.append("chat"), done=ended[1].set))
        gate.set()
        assert all(e.wait(5) for e in ended)
        worker._task_seconds = 0.0
        worker.submit(Task("other", slow_other, bounded=False))
        done = threading.Event()
        worker.submit(Task("stepped", stepped, done=done.set))
        assert done.wait(5)
    finally:
        worker.stop()
    assert log == ["chat", "upload"]
    assert worker._task_seconds < 0.3  # its own turns are instant; the others' took 0.6 s


def test_a_bulk_step_longer_than_bulk_every_s_does_not_take_every_turn() -> None:
    """Before: BULK's wait counted from the start of its turn, so a step longer than
    bulk_every_s (an 8-chunk compression on a loaded machine: 4-5 s) was due again when it
    ended, and a chat waited for the whole upload (38 s; minutes for a big file)."""
    worker = Worker(lambda: "model", bulk_every_s=0.2)
    worker.start()
    wait_until(lambda: worker.state == "ready")
    log: list[str] = []

    def upload(cm):
        for i in range(8):
            time.sleep(0.4)
            log.append(f"bulk{i}")
            yield

    try:
        worker.submit(Task("upload", upload), BULK)
        wait_until(lambda: "bulk0" in log)
        worker.submit(Task("chat", lambda cm: log.append("chat")))
        wait_until(lambda: "chat" in log, timeout=10)
    finally:
        worker.stop()
    assert log.index("chat") <= 3, log  # after the step under way (and at most one more)


def test_requests_whose_clients_left_do_not_hold_places_in_the_queue() -> None:
    """Before: a cancelled request that had not started still counted against max_waiting
    until the worker next looked (after the step under way), so new requests got 503."""
    worker = Worker(lambda: "model", max_waiting=2)
    worker.start()
    wait_until(lambda: worker.state == "ready")
    gate = threading.Event()
    try:
        worker.submit(Task("hold", lambda cm: gate.wait(5)))
        wait_until(lambda: worker._current is not None)
        left = [worker.submit(Task(f"q{i}", lambda cm: None)) for i in range(2)]
        with pytest.raises(APIError):
            worker.submit(Task("one too many", lambda cm: None))
        depths: list[int] = []
        worker.on_depth = depths.append
        for task in left:
            task.cancel()
        assert worker.queue_depth() == 0 and depths == [1, 0]  # the /metrics gauge follows
        ran = threading.Event()
        worker.submit(Task("new", lambda cm: ran.set()))  # no 503: the places are free
        gate.set()
        assert ran.wait(5)
    finally:
        gate.set()
        worker.stop()


def test_interactive_idle_says_how_long_since_a_chat_took_a_turn() -> None:
    worker = Worker(lambda: "model")
    worker.start()
    wait_until(lambda: worker.state == "ready")
    try:
        assert worker.interactive_idle() == float("inf")
        ran = threading.Event()
        worker.submit(Task("upload", lambda cm: ran.set()), BULK)
        assert ran.wait(5) and worker.interactive_idle() == float("inf")  # BULK: not a chat
        worker.submit(Task("chat", lambda cm: None))
        wait_until(lambda: worker.interactive_idle() < 5)
    finally:
        worker.stop()


def test_a_task_whose_failure_handler_fails_does_not_end_the_worker(caplog) -> None:
    """Before (a disk-full audit): recording an indexing error on a full disk raised inside
    `failed`, which killed the model thread: every later request hung, /health said ok."""
    worker = Worker(lambda: "model")
    worker.start()
    wait_until(lambda: worker.state == "ready")

    def boom(cm):
        raise OSError(28, "No space left on device")

    def cannot_record(exc):
        raise OSError(28, "database or disk is full")

    try:
        worker.submit(Task("upload", boom, failed=cannot_record), BULK)
        ran = threading.Event()
        worker.submit(Task("chat", lambda cm: ran.set()))
        assert ran.wait(5) and worker.state == "ready"
    finally:
        worker.stop()
    assert "a task's cannot_record failed" in caplog.text


def submit_as(worker: Worker, caller: str | None, task: Task) -> Task:
    """Submit `task` as a request with API key `caller` would (the gate sets `CALLER`)."""
    token = CALLER.set(caller)
    try:
        return worker.submit(Task(task.key, task.start, task.failed, task.done, task.can_start))
    finally:
        CALLER.reset(token)


def test_new_work_takes_turns_by_api_key() -> None:
    """A team audit: one queue, first come first served, so a colleague's one question waited
    behind every request of a script's burst. Now the keys take turns: the key whose last
    task started longest ago goes first, each key's own in order; without keys (one caller)
    it is queue order, as before."""
    worker = ready_worker(max_waiting=8)
    release = threading.Event()
    ran: list[str] = []
    finished = threading.Event()
    submit_as(worker, "script", Task("busy", lambda cm: release.wait(5)))
    wait_until(lambda: worker.queue_depth() == 0)  # started: "script" had the last turn
    for i in range(3):
        submit_as(worker, "script", Task(f"s{i}", lambda cm, i=i: ran.append(f"script{i}")))
    submit_as(worker, "alice", Task("a0", lambda cm: ran.append("alice0")))
    submit_as(worker, "alice", Task("a1", lambda cm: ran.append("alice1")))
    submit_as(worker, None, Task("n0", lambda cm: ran.append("none0")))
    submit_as(worker, "script", Task("end", lambda cm: finished.set()))
    release.set()
    assert finished.wait(5)
    # never-served keys first, in the order they came (alice, then no key), then by turns
    assert ran == ["alice0", "none0", "script0", "alice1", "script1", "script2"]

    # one caller: queue order
    release.clear()
    ran.clear()
    finished.clear()
    submit_as(worker, None, Task("busy", lambda cm: release.wait(5)))
    wait_until(lambda: worker.queue_depth() == 0)
    for i in range(4):
        submit_as(worker, None, Task(i, lambda cm, i=i: ran.append(i)))
    submit_as(worker, None, Task("end", lambda cm: finished.set()))
    release.set()
    assert finished.wait(5)
    assert ran == [0, 1, 2, 3]
    worker.stop()


def test_the_queue_bound_is_each_api_keys_own() -> None:
    """`max_waiting` bounds each key's waiting tasks: a script that filled the queue got the
    503s, and so did everyone after it. Without keys it bounds them all together."""
    worker = ready_worker(max_waiting=2)
    release = threading.Event()
    submit_as(worker, "script", Task("busy", lambda cm: release.wait(5)))
    wait_until(lambda: worker.queue_depth() == 0)
    for i in range(2):
        submit_as(worker, "script", Task(i, lambda cm: None))
    with pytest.raises(APIError) as info:
        submit_as(worker, "script", Task("more", lambda cm: None))
    assert info.value.status == 503 and info.value.code == "server_overloaded"
    assert "2 requests with key script waiting" in info.value.message
    submit_as(worker, "alice", Task("a", lambda cm: None))  # her own places are free
    submit_as(worker, None, Task("n", lambda cm: None))
    assert worker.queue_depth() == 4  # (the gauge counts everyone's)
    submit_as(worker, None, Task("n2", lambda cm: None))
    with pytest.raises(APIError, match=r"busy \(2 requests waiting\)"):
        submit_as(worker, None, Task("n3", lambda cm: None))
    release.set()
    wait_until(lambda: worker.queue_depth() == 0)
    worker.stop()


def test_take_hands_over_tasks_by_turns_of_api_keys() -> None:
    """The chat engine admits queued requests as a group of up to the free places in its
    batch: taken by turns of keys too (a script's burst took every free place)."""
    worker = ready_worker(max_waiting=8)
    release = threading.Event()
    taken: list[list] = []

    def leader(cm):
        release.wait(5)
        tasks = worker.take(lambda key: key[0] == "chat", 3)
        taken.append([t.key[1] for t in tasks])
        for t in tasks:
            t.done()

    submit_as(worker, "script", Task(("chat", "lead"), leader))
    wait_until(lambda: worker.queue_depth() == 0)
    for i in range(4):
        submit_as(worker, "script", Task(("chat", f"s{i}"), lambda cm: None))
    submit_as(worker, "alice", Task(("chat", "a0"), lambda cm: None))
    submit_as(worker, "alice", Task(("chat", "a1"), lambda cm: None))
    release.set()
    wait_until(lambda: bool(taken))
    assert taken == [["a0", "s0", "a1"]]
    wait_until(lambda: worker.queue_depth() == 0)
    # a cancelled request (its client left) holds no turn of its key's (a review: bob's
    # first request, cancelled, took his turn in the group and his second came after)
    release.clear()
    taken.clear()
    submit_as(worker, "script", Task(("chat", "lead"), leader))
    wait_until(lambda: worker.queue_depth() == 0)
    for i in range(3):
        submit_as(worker, "script", Task(("chat", f"s{i}"), lambda cm: None))
    submit_as(worker, "bob", Task(("chat", "b0"), lambda cm: None))
    submit_as(worker, "bob", Task(("chat", "b1"), lambda cm: None))
    worker.cancel(lambda key: key == ("chat", "b0"))
    release.set()
    wait_until(lambda: bool(taken))
    assert taken == [["b1", "s0", "s1"]]
    wait_until(lambda: worker.queue_depth() == 0)
    worker.stop()


@pytest.mark.parametrize("caller", ["script", None])
def test_running_work_takes_turns_by_caller_too(caller) -> None:
    """A team audit: a key's 16 running embeddings jobs each took a turn between two steps of
    the chats' decode batch, and a colleague's answer came 30-40x slower (without keys too).
    Steps go round robin by caller, the batch being a caller of its own (`BATCH`)."""
    from clara_cli.worker import BATCH

    worker = ready_worker()
    log: list[str] = []
    gate = threading.Event()
    finished = threading.Event()

    def steps(name, n, wait=False):
        def more():
            for _ in range(n):
                log.append(name)  # a step's turn
                yield

        def run(cm):
            if wait:
                gate.wait(5)
            log.append(name)  # its start's turn
            return more()

        return run

    submit_as(worker, caller, Task("hold", steps("hold", 1, wait=True)))
    wait_until(lambda: worker.queue_depth() == 0)
    for j in range(3):
        submit_as(worker, caller, Task(f"e{j}", steps("embed", 4)))
    batch = Task("batch", steps("batch", 4), done=finished.set, caller=BATCH)
    worker.submit(batch)
    gate.set()
    assert finished.wait(5)
    order = [x for x in log if x != "hold"]
    at = [i for i, x in enumerate(order) if x == "batch"]
    # at most one other turn between two of the batch's (before: one of each job's)
    assert len(at) == 5 and max(b - a for a, b in zip(at, at[1:])) <= 2, (caller, order)
    worker.stop()


def test_a_step_that_hangs_makes_health_say_stalled(tmp_path) -> None:
    """A container audit: a model worker stuck in one step (not failed) left /health at 200,
    so a liveness probe never restarted the server. Past --unhealthy-after it is a 503."""
    from fastapi.testclient import TestClient

    from indexing.service.app import ServiceSettings, create_app

    app = create_app(ServiceSettings(index_root=str(tmp_path / "index")), load=lambda: "model")
    app.state.unhealthy_after = 0.3  # (what `serve_http` sets from --unhealthy-after)
    release = threading.Event()
    with TestClient(app) as http:
        worker = app.state.service.worker
        wait_until(lambda: http.get("/health").status_code == 200)
        worker.submit(Task("hang", lambda cm: release.wait(30)), BULK)
        wait_until(lambda: worker.stuck_for() > 0)
        assert http.get("/health").status_code == 200  # (a step under the limit is fine)
        wait_until(lambda: worker.stuck_for() > 0.4)
        r = http.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "stalled", r.json()
        assert "--unhealthy-after" in r.json()["error"]
        release.set()
        wait_until(lambda: worker.stuck_for() == 0)
        assert http.get("/health").status_code == 200
