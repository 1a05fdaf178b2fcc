"""Ctrl-C and SIGTERM during training: finish the step, keep a checkpoint, then stop.

A `KeyboardInterrupt` raised from a signal handler lands wherever the main thread happens to
be: inside tqdm's or matplotlib's code (a half-imported matplotlib then failed with an
unrelated AttributeError), inside a checkpoint write, or in code that swallows it (the run
trained on). So while the loop runs, a signal only asks to stop, and the loop stops at the
next step boundary. A second signal more than `FORCE_AFTER_S` later stops at once, except
while a checkpoint is being written; then it stops right after the write. (Ctrl-C reaches the
`--ranks` launcher and its ranks together, and the launcher then sends its ranks SIGTERM: that
pair is one request, not two.)
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from time import monotonic

#: A second Ctrl-C/SIGTERM this many seconds after the first stops without finishing the step.
FORCE_AFTER_S = 1.0
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """The run stopped at a step boundary because it was asked to (exit status 130)."""


class StopRequests:
    """While entered (in the main thread), SIGINT and SIGTERM set `requested` instead of
    raising. A signal ignored when entering (a background job's SIGINT) stays ignored."""

    def __init__(self) -> None:
        self.requested_at: float | None = None
        self._first: int | None = None  # the signal that asked
        self._passed_on = False  # the launcher's SIGTERM after a Ctrl-C's SIGINT, taken
        self._forced = False
        self._writing = 0
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.requested_at is not None

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            if handler is not None:  # (None: a handler not set from Python)
                signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: object) -> None:
        now = monotonic()
        if self.requested_at is None:
            self.requested_at, self._first = now, signum
        elif signum == signal.SIGTERM and self._first == signal.SIGINT and not self._passed_on:
            self._passed_on = True  # the launcher passing the same Ctrl-C on, however late
            # (on a loaded machine it came over a second after, and stopped a rank mid-step:
            # the other rank then failed with "connection to a peer was lost")
        elif now - self.requested_at >= FORCE_AFTER_S:
            if self._writing:
                self._forced = True
            else:
                raise KeyboardInterrupt

    @contextmanager
    def writing(self) -> Iterator[None]:
        """A forced stop waits until the block (a checkpoint write) is done."""
        self._writing += 1
        try:
            yield
        finally:
            self._writing -= 1
            if self._forced and not self._writing:
                self._forced = False
                raise KeyboardInterrupt
