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


def test_two_devices_run_two_jobs_at_once_each_pinned_and_a_third_waits_first_in_line():
    queue, gate, ran = JobQueue(["cpu", "cuda:1"]), threading.Event(), []
    assert queue.submit(blocking_job("a", "alice", gate, ran)) == 0
    assert queue.submit(blocking_job("b", "bob", gate, ran)) == 0  # the second device is free: it runs now too
    assert queue.submit(blocking_job("c", "carol", gate, ran)) == 1  # next in line for whichever frees first
    deadline = time.time() + 10
    while len(ran) < 2 and time.time() < deadline:
        time.sleep(0.01)
    assert sorted(ran) == ["a", "b"] and {queue.get("a").device, queue.get("b").device} == {"cpu", "cuda:1"}
    assert queue.position("c") == 1 and queue.get("c").device is None
    gate.set()
    assert queue.wait_idle(10) and sorted(ran) == ["a", "b", "c"]


def test_a_waiting_job_is_told_when_the_first_device_frees_up():
    from studio.events import Step

    queue, gate, ran = JobQueue(["cpu", "cpu"]), threading.Event(), []
    for name in ("a", "b", "c", "d"):
        queue.submit(blocking_job(name, name, gate, ran))
    deadline = time.time() + 10
    while len(ran) < 2 and time.time() < deadline:
        time.sleep(0.01)
    assert queue.seconds_to_start("c") is None  # the running jobs have made no steps yet: nothing to tell
    now = time.time()
    for name, pace in (("a", 1.0), ("b", 3.0)):  # 10 steps done of 100, `pace` seconds a step
        job = queue.get(name)
        job.submitted = now - 100
        for step in (1, 10):
            job.log.emit(Step(step=step, max_steps=100, time=now - (10 - step) * pace))
    # c goes when a ends (90 steps x 1 s), d when b ends (90 x 3 s)
    assert queue.seconds_to_start("c") == pytest.approx(90, abs=2)
    assert queue.seconds_to_start("d") == pytest.approx(270, abs=2)
    gate.set()
    assert queue.wait_idle(10)
