"""The studio's training jobs: one at a time per device, in arrival order, outliving any page or client.

Each device (`STUDIO_DEVICES=cuda:0,cuda:1`; all visible GPUs by default) has
one worker thread, started on the first submit (never at import), and a job is
pinned to the device of the worker that takes it. A job's events live in its
EventLog, so a page that reloads simply reads them again from cursor 0; the
run does not depend on any connection.
"""
from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

from studio.events import EventLog, Failed
from studio.runs import RunStatus
from studio.training.commands import RunCommands


DONE = "done"  # a job's last state; what the run came to is in its events (studio.runs.RunStatus)


class QueueError(RuntimeError):
    pass


@dataclass
class Job:
    id: str
    owner: str
    log: EventLog
    work: Callable[["Job"], None]
    commands: RunCommands = field(default_factory=RunCommands)
    status: str = RunStatus.QUEUED  # queued | running | DONE
    submitted: float = field(default_factory=time.time)  # events older than this belong to an earlier attempt
    device: str | None = None  # the device its worker runs it on (None: the best available), set when it starts
    started: float = 0.0

    @property
    def active(self) -> bool:
        """Queued or training: it still holds its user's one place in the queue."""
        return self.status != DONE

    def seconds_left(self, now: float | None = None) -> float | None:
        """How long this running job still needs, at the wall-clock pace of its steps so far (previews and scores
        included); None until it has made two steps in this attempt."""
        steps = [e for e in self.log.all() if e.kind == "step" and e.time >= self.submitted]
        if len(steps) < 2:
            return None
        pace = (steps[-1].time - steps[0].time) / (steps[-1].step - steps[0].step or 1)
        elapsed_since_last = max(0.0, (now or time.time()) - steps[-1].time)
        return max(0.0, (steps[-1].max_steps - steps[-1].step) * pace - elapsed_since_last)


class JobQueue:
    def __init__(self, devices: Sequence[str | None] | Callable[[], Sequence[str | None]] = (None,),
                 max_waiting: int = 20) -> None:
        """`devices`: one job at a time on each (None: the best available); a callable is asked on first use, so
        counting the GPUs (importing torch) waits until there is something to run."""
        self._devices_source = devices
        self._devices: list[str | None] | None = None
        self._jobs: dict[str, Job] = {}
        self._waiting: deque[Job] = deque()
        self._running: dict[int, Job] = {}  # device slot -> its job
        self._lock = threading.Condition()
        self._workers: dict[int, threading.Thread] = {}
        self.max_waiting = max_waiting

    def submit(self, job: Job) -> int:
        """Queue a job; returns its position (0 = runs now). One active job per user."""
        with self._lock:
            if any(j.owner == job.owner and j.active for j in self._jobs.values()):
                raise QueueError("you already have a run queued or training; stop it or wait for it to finish")
            if len(self._waiting) >= self.max_waiting:
                raise QueueError("the queue is full; try again later")
            self._jobs[job.id] = job
            self._waiting.append(job)
            for slot in range(len(self.devices)):
                worker = self._workers.get(slot)
                if worker is None or not worker.is_alive():
                    self._workers[slot] = threading.Thread(target=self._run_forever, args=(slot,), daemon=True,
                                                           name=f"studio-jobs-{slot}")
                    self._workers[slot].start()
            self._lock.notify_all()
            return self._position(job)

    @property
    def devices(self) -> list[str | None]:
        if self._devices is None:
            source = self._devices_source
            devices = list(source() if callable(source) else source)
            if not devices:
                raise ValueError("the job queue needs at least one device")
            self._devices = devices
        return self._devices

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def position(self, job_id: str) -> int:
        """0 = running (or about to), n = n-th in line for the next free device, -1 = not waiting."""
        with self._lock:
            job = self._jobs.get(job_id)
            return -1 if job is None else self._position(job)

    def _position(self, job: Job) -> int:
        if job.status == DONE:
            return -1
        if job.status == RunStatus.RUNNING:
            return 0
        free = len(self.devices) - len(self._running)
        ahead = list(self._waiting).index(job)
        return 0 if ahead < free else ahead - free + 1

    def seconds_to_start(self, job_id: str) -> float | None:
        """About when a waiting job gets a device: when the n-th running job ends, for the n-th in line. None when
        that can't be told yet (a run ahead has not made two steps, or the jobs ahead have not started)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.status != RunStatus.QUEUED:
                return None
            place = self._position(job)
            if place == 0:
                return 0.0
            left = [j.seconds_left() for j in self._running.values()]
        if place > len(left) or any(s is None for s in left):
            return None
        return sorted(left)[place - 1]

    def cancel_waiting(self, job_id: str) -> bool:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.status == RunStatus.QUEUED:
                self._waiting.remove(job)
                job.status = DONE
                return True
            return False

    @property
    def busy(self) -> bool:
        return bool(self._running) or bool(self._waiting)

    def running(self) -> list[Job]:
        with self._lock:
            return list(self._running.values())

    def wait_idle(self, timeout: float | None = None) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: not self.busy, timeout)

    def _run_forever(self, slot: int) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: bool(self._waiting))
                job = self._running[slot] = self._waiting.popleft()
                job.status, job.device, job.started = RunStatus.RUNNING, self.devices[slot], time.time()
            try:
                job.work(job)
            except Exception as exc:  # a crashed job must not take the queue (or the studio) down
                job.log.emit(Failed(error=f"{type(exc).__name__}: {exc}", advice="see the studio's log for details"))
                traceback.print_exc()
            finally:
                with self._lock:
                    job.status = DONE
                    del self._running[slot]
                    self._lock.notify_all()
