"""The run folder: step names, metadata, checkpoints, and the status a user is shown."""
from __future__ import annotations

import pytest

from studio.events import Cancelled, Failed, Finished, Started, Step
from studio.runs import RunFolder, RunMeta, RunStatus, derive_state, is_terminal, parse_step, step_name


def test_step_names_sort_by_step_and_parse_back():
    assert step_name(120) == "step-000120" and parse_step("step-000120") == 120
    assert sorted([step_name(1000), step_name(99)]) == [step_name(99), step_name(1000)]
    for other in ("step-000120.tmp", "steps-1", "step-", "README.md"):
        assert parse_step(other) is None


def test_meta_round_trips_and_ignores_what_a_newer_studio_added(tmp_path):
    run = RunFolder(tmp_path / "r1")
    meta = RunMeta("r1", "alice", ("object-lora",), {"max_steps": 4}, None, dataset_id="d1", name="my dog")
    run.write_meta(meta)
    assert run.read_meta() == meta
    run.meta_file.write_text(run.meta_file.read_text().replace('"name"', '"future_key": 1, "name"'))
    assert run.read_meta() == meta


def test_only_complete_checkpoints_count_oldest_first(tmp_path):
    run = RunFolder(tmp_path / "r")
    for step, complete in ((20, True), (100, True), (140, False)):
        folder = run.checkpoint_dir(step)
        folder.mkdir(parents=True)
        if complete:
            (folder / "state.json").write_text("{}")
    (run.checkpoints / "step-000160.tmp").mkdir()  # what a kill during a save leaves behind
    assert run.checkpoint_steps() == [20, 100] and run.latest_checkpoint() == run.checkpoint_dir(100)


def events_at(*events):
    return [e.__class__(**{**e.__dict__, "time": float(i)}) for i, e in enumerate(events)]


def test_status_from_events_and_job():
    started, steps = Started(max_steps=10), [Step(step=3, max_steps=10)]
    running = derive_state("r", events_at(started, *steps), job_status="running", paused=False, queue_position=0)
    assert running.status is RunStatus.RUNNING and (running.step, running.max_steps) == (3, 10)
    assert derive_state("r", events_at(started), job_status="running", paused=True, queue_position=0).status is RunStatus.PAUSED
    stopped = derive_state("r", events_at(started, *steps, Cancelled(step=3)), job_status="done", paused=False,
                           queue_position=-1, checkpoint="step-000003")
    assert stopped.status is RunStatus.CANCELLED and stopped.resumable and stopped.checkpoint == "step-000003"
    # resumed: the old "cancelled" belongs to the first attempt, not to the one training now
    again = events_at(started, *steps, Cancelled(step=3), Started(max_steps=10, resumed_from=3))
    assert derive_state("r", again, job_status=None, paused=False, queue_position=-1).status is RunStatus.INTERRUPTED
    assert derive_state("r", again, job_status="queued", paused=False, queue_position=2).queue_position == 2
    done = derive_state("r", events_at(started, Step(step=10, max_steps=10), Finished(step=10)), job_status=None,
                        paused=False, queue_position=-1)
    assert done.status is RunStatus.FINISHED and not done.resumable
    failed = derive_state("r", events_at(started, Failed(error="disk full")), job_status=None, paused=False, queue_position=-1)
    assert failed.status is RunStatus.FAILED and failed.message == "disk full" and failed.resumable


@pytest.mark.parametrize("status, terminal", [("finished", True), ("interrupted", True), ("running", False),
                                              ("queued", False), ("nonsense", False)])
def test_terminal_statuses(status, terminal):
    assert is_terminal(status) is terminal
