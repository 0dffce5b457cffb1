"""Commands in: how the outside world steers a running training loop.

The loop reads these once per step; whoever owns the run (a job thread, the
CLI's Ctrl-C handler, a test) sets them. No globals: each run has its own.
"""
from __future__ import annotations

import threading


class RunCommands:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._pause = threading.Event()
        self._sample = threading.Event()

    def stop(self) -> None:
        self._stop.set()
        self._pause.clear()

    def pause(self) -> None:
        self._pause.set()

    def resume(self) -> None:
        self._pause.clear()

    def sample_now(self) -> None:
        self._sample.set()

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def should_pause(self) -> bool:
        return self._pause.is_set()

    def take_sample_request(self) -> bool:
        """True once per request: the loop consumes it."""
        if self._sample.is_set():
            self._sample.clear()
            return True
        return False

    def wait_while_paused(self, poll: float = 0.2) -> None:
        while self._pause.is_set() and not self._stop.is_set():
            self._stop.wait(poll)
