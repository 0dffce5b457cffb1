"""The job queue: one job at a time in arrival order, one per user, and a crash that takes down only its own job."""
from __future__ import annotations

import threading
import time

import pytest

from studio.events import EventLog
from studio.jobs import DONE, Job, JobQueue, QueueError


def blocking_job(job_id: str, owner: str, gate: threading.Event, ran: list[str]) -> Job:
    def work(job: Job) -> None:
        ran.append(job_id)
        gate.wait(10)
    return Job(job_id, owner, EventLog(), work)


def test_jobs_run_one_at_a_time_in_order_with_positions():
    queue, gate, ran = JobQueue(), threading.Event(), []
    assert queue.submit(blocking_job("a", "alice", gate, ran)) == 0
    assert queue.submit(blocking_job("b", "bob", gate, ran)) == 1
    assert queue.submit(blocking_job("c", "carol", gate, ran)) == 2
    assert queue.position("c") == 2 and queue.position("nothing") == -1
    gate.set()
    assert queue.wait_idle(10)
    assert ran == ["a", "b", "c"] and all(not queue.get(j).active for j in "abc")


def test_one_active_job_per_user_and_a_cancelled_waiting_job_never_runs():
    queue, gate, ran = JobQueue(), threading.Event(), []
    queue.submit(blocking_job("a", "alice", gate, ran))
    with pytest.raises(QueueError, match="already have a run"):
        queue.submit(blocking_job("a2", "alice", gate, ran))
    queue.submit(blocking_job("b", "bob", gate, ran))
    deadline = time.time() + 10
    while not ran and time.time() < deadline:  # until the worker has picked "a" up
        time.sleep(0.01)
    assert queue.cancel_waiting("b") and queue.get("b").status == DONE
    assert not queue.cancel_waiting("a")  # running: only its own stop command can end it
    gate.set()
    assert queue.wait_idle(10) and ran == ["a"]
    queue.submit(blocking_job("a3", "alice", gate, ran))  # done now: alice may queue again
    assert queue.wait_idle(10) and ran == ["a", "a3"]


def test_a_crashing_job_reports_failed_and_the_queue_goes_on():
    queue, gate, ran = JobQueue(), threading.Event(), []
    gate.set()

    def crash(job: Job) -> None:
        raise RuntimeError("boom")

    broken = Job("x", "alice", EventLog(), crash)
    queue.submit(broken)
    queue.submit(blocking_job("y", "bob", gate, ran))
    assert queue.wait_idle(10)
    failed = broken.log.all()[-1]
    assert failed.kind == "failed" and "boom" in failed.error and ran == ["y"]
