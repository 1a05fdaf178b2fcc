"""Ctrl-C/SIGTERM during training ask the loop to stop at a step boundary (training/stopping.py),
with real signals sent to this process."""

import os
import signal

import pytest

from training import stopping
from training.stopping import StopRequests


def test_a_signal_asks_and_a_later_second_one_stops_at_once(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(stopping, "monotonic", lambda: clock[0])
    before = signal.getsignal(signal.SIGTERM)
    with StopRequests() as stops:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stops.requested  # (a handler runs before os.kill returns to Python code)
        clock[0] += 0.5
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C and the launcher's SIGTERM: one request
        clock[0] += stopping.FORCE_AFTER_S
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


def test_the_launchers_late_sigterm_after_a_ctrl_c_is_the_same_request(monkeypatch):
    """A CI run on a loaded machine: Ctrl-C reached a --ranks run's ranks (SIGINT), and the
    launcher's SIGTERM passing it on came over a second later, stopping one rank mid-step; the
    other failed with "connection to a peer was lost" and a traceback. However late, that
    SIGTERM is the same request; a signal after it still stops at once."""
    clock = [100.0]
    monkeypatch.setattr(stopping, "monotonic", lambda: clock[0])
    with StopRequests() as stops:
        os.kill(os.getpid(), signal.SIGINT)
        clock[0] += 5 * stopping.FORCE_AFTER_S
        os.kill(os.getpid(), signal.SIGTERM)  # (the launcher's: no KeyboardInterrupt)
        assert stops.requested
        clock[0] += stopping.FORCE_AFTER_S
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)  # (a second Ctrl-C, passed on: at once)


def test_a_forced_stop_waits_for_the_checkpoint_write(monkeypatch):
    monkeypatch.setattr(stopping, "FORCE_AFTER_S", 0.0)
    written = []
    with StopRequests() as stops:
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt):
            with stops.writing():
                os.kill(os.getpid(), signal.SIGTERM)
                written.append("all of it")
    assert written == ["all of it"]


def test_an_ignored_sigint_stays_ignored():
    """A background job's SIGINT is ignored; entering must not make Ctrl-C of the shell reach it."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopRequests():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
