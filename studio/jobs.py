"""One job at a time on the accelerator, in arrival order, outliving any page or client.

Jobs run on a single worker thread started on the first submit (never at
import). A job's events live in its EventLog, so a page that reloads simply
reads them again from cursor 0; the run does not depend on any connection.
"""
from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

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

    @property
    def active(self) -> bool:
        """Queued or training: it still holds its user's one place in the queue."""
        return self.status != DONE


class JobQueue:
    def __init__(self, max_waiting: int = 20) -> None:
        self._jobs: dict[str, Job] = {}
        self._waiting: deque[Job] = deque()
        self._running: Job | None = None
        self._lock = threading.Condition()
        self._worker: threading.Thread | None = None
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
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._run_forever, name="studio-jobs", daemon=True)
                self._worker.start()
            self._lock.notify_all()
            return self.position(job.id)

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def position(self, job_id: str) -> int:
        """0 = running (or about to), n = n jobs ahead of it, -1 = not waiting."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.status == DONE:
                return -1
            if job.status == RunStatus.RUNNING:
                return 0
            ahead = list(self._waiting).index(job)
            return ahead + (1 if self._running is not None else 0)

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
        return self._running is not None or bool(self._waiting)

    def wait_idle(self, timeout: float | None = None) -> bool:
        with self._lock:
            return self._lock.wait_for(lambda: not self.busy, timeout)

    def _run_forever(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: bool(self._waiting))
                job = self._running = self._waiting.popleft()
                job.status = RunStatus.RUNNING
            try:
                job.work(job)
            except Exception as exc:  # a crashed job must not take the queue (or the studio) down
                job.log.emit(Failed(error=f"{type(exc).__name__}: {exc}", advice="see the studio's log for details"))
                traceback.print_exc()
            finally:
                with self._lock:
                    job.status = DONE
                    self._running = None
                    self._lock.notify_all()
