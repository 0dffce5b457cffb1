"""The Studio facade: job queue, ownership, events, drawing — as the UI and the CLI use it."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from studio.engine import Studio
from studio.inference.generate import DrawSettings, InferenceError
from studio.jobs import QueueError
from studio.ui import views
from studio.workspace import NotFound
from tests.conftest import FAST


def test_engine_never_imports_gradio():
    code = "import sys, studio.engine, studio.cli, studio.training.loop, studio.inference.generate; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _wait(studio, user, run_id, statuses=("finished", "failed", "cancelled"), timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = studio.run_state(user, run_id)
        if state.status in statuses:
            return state
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still {studio.run_state(user, run_id)}")


@pytest.fixture
def studio(tmp_path, tiny_sd):
    return Studio(tmp_path / "home", base_model=str(tiny_sd))


def test_queue_runs_one_job_at_a_time_and_reports_positions(studio, photos):
    settings = {"class_noun": "dog", "max_steps": 3, "preview_every": 10, **FAST}
    alice = studio.start_training("alice", studio.photos.add("alice", sorted(photos.iterdir())), ["object-lora"], settings)
    bob = studio.start_training("bob", studio.photos.add("bob", sorted(photos.iterdir())), ["object-lora"], settings)
    assert studio.run_state("bob", bob).queue_position >= 1
    with pytest.raises(QueueError, match="already have a run"):
        studio.start_training("alice", studio.photos.add("alice", sorted(photos.iterdir())), ["object-lora"], settings)
    assert _wait(studio, "alice", alice).status == "finished"
    assert _wait(studio, "bob", bob).status == "finished"
    a_steps = [e for e in studio.events("alice", alice)[0] if e.kind == "step"]
    b_start = next(e for e in studio.events("bob", bob)[0] if e.kind == "started")
    assert a_steps[-1].time <= b_start.time  # bob's run began after alice's finished


def test_a_studio_with_two_devices_trains_two_users_at_once_and_a_third_waits_next_in_line(tmp_path, tiny_sd, photos):
    """Two CPU "devices" stand in for two GPUs (STUDIO_DEVICES=cpu,cpu)."""
    studio = Studio(tmp_path / "home", base_model=str(tiny_sd), devices="cpu,cpu")
    settings = {"class_noun": "dog", "max_steps": 30, "preview_every": 0, "score_checkpoints": False, **FAST}
    runs = {user: studio.start_training(user, studio.photos.add(user, sorted(photos.iterdir())), ["object-lora"],
                                        settings) for user in ("alice", "bob", "carol")}
    carol = studio.run_state("carol", runs["carol"])
    assert carol.status == "queued" and carol.queue_position == 1  # first in line for whichever device frees first
    assert {studio.run_state(u, runs[u]).status for u in ("alice", "bob")} <= {"running", "queued"}
    assert "next in line" in views.status_markdown(carol, [])
    for user in runs:
        assert _wait(studio, user, runs[user]).status == "finished"
    span = {}
    for user, run_id in runs.items():
        events = studio.events(user, run_id)[0]
        span[user] = (next(e.time for e in events if e.kind == "started"), events[-1].time)
    assert span["bob"][0] < span["alice"][1] and span["alice"][0] < span["bob"][1]  # they trained at the same time
    assert span["carol"][0] >= min(span["alice"][1], span["bob"][1]) - 1.0  # carol began once a device was free


def test_a_device_list_naming_what_the_machine_lacks_is_refused_before_any_run(tmp_path, tiny_sd):
    with pytest.raises(ValueError, match=r"cuda:7 does not exist here \(no CUDA GPU\)"):
        Studio(tmp_path / "home", base_model=str(tiny_sd), devices="cpu,cuda:7")
    with pytest.raises(ValueError, match="'gpu0' is not a device; use cpu, mps, cuda or cuda:N"):
        Studio(tmp_path / "home", base_model=str(tiny_sd), devices="gpu0")


def test_users_cannot_reach_each_others_runs_photos_or_models(studio, photos):
    dataset = studio.photos.add("alice", sorted(photos.iterdir()))
    run_id = studio.start_training("alice", dataset, ["object-lora"], {"class_noun": "dog", "max_steps": 1, "preview_every": 5, **FAST})
    _wait(studio, "alice", run_id)
    for attempt in (lambda: studio.events("bob", run_id), lambda: studio.run_file("bob", run_id, "output/README.md"),
                    lambda: studio.photos.check("bob", dataset), lambda: studio.stop("bob", run_id),
                    lambda: studio.generate("bob", f"run:{run_id}", DrawSettings("a photo of sks dog", steps=1)),
                    lambda: studio.run_file("alice", run_id, "../../../../etc/passwd"),
                    lambda: studio.generate("bob", "/etc/passwd", DrawSettings("x", steps=1))):
        with pytest.raises((NotFound, ValueError)):
            attempt()
    for bad in (f"run:{run_id}@abc", f"run:{run_id}@999", "run:../../x"):
        with pytest.raises(NotFound):
            studio.generate("alice", bad, DrawSettings("a photo of sks dog", steps=1))
    assert [m.id for m in studio.models("bob")] == ["base"]
    assert f"run:{run_id}" in [m.id for m in studio.models("alice")]
    assert studio.runs("bob") == []


def test_stop_saves_a_checkpoint_and_resume_finishes(studio, photos):
    dataset = studio.photos.add("local", sorted(photos.iterdir()))
    settings = {"class_noun": "dog", "max_steps": 200, "preview_every": 1000, **FAST}
    run_id = studio.start_training("local", dataset, ["object-lora"], settings)
    _wait(studio, "local", run_id, statuses=("running",))
    while not any(e.kind == "step" for e in studio.events("local", run_id)[0]):
        time.sleep(0.1)
    studio.pause("local", run_id)
    time.sleep(0.5)
    assert studio.run_state("local", run_id).status == "paused"
    paused_at = studio.run_state("local", run_id).step
    time.sleep(1.0)
    assert studio.run_state("local", run_id).step <= paused_at + 1  # at most the step in flight completes
    studio.stop("local", run_id)
    state = _wait(studio, "local", run_id)
    assert state.status == "cancelled"
    cancelled = [e for e in studio.events("local", run_id)[0] if e.kind == "cancelled"][-1]
    assert cancelled.checkpoint.startswith("checkpoints/step-")
    assert f"run:{run_id}@{state.step}" in [m.id for m in studio.models("local")]
    assert state.resumable and state.checkpoint == cancelled.checkpoint.split("/")[-1]  # what Stop kept, by name

    # Resume (the same button that ends a pause) continues the stopped run from that checkpoint to its end
    studio.resume("local", run_id)
    assert studio.run_state("local", run_id).status in ("queued", "running")  # at once, not after the next event
    done = _wait(studio, "local", run_id)
    assert done.status == "finished" and done.step == 200
    started = [e for e in studio.events("local", run_id)[0] if e.kind == "started"]
    assert len(started) == 2 and started[-1].resumed_from == state.step
    with pytest.raises(ValueError, match="nothing to resume"):
        studio.resume("local", run_id)  # finished: the button is greyed out, and the engine says why


def test_events_since_cursor_and_after_restart(studio, photos, tmp_path, tiny_sd):
    dataset = studio.photos.add("local", sorted(photos.iterdir()))
    run_id = studio.start_training("local", dataset, ["object-lora"], {"class_noun": "dog", "max_steps": 2, "preview_every": 5, **FAST})
    _wait(studio, "local", run_id)
    everything, cursor = studio.events("local", run_id)
    first, mid = studio.events("local", run_id, 0)[0][:3], 3
    rest, end = studio.events("local", run_id, mid)
    assert first + rest == everything and end == cursor
    reopened = Studio(tmp_path / "home", base_model=str(tiny_sd))  # a restarted studio reads the log from disk
    assert [e.kind for e in reopened.events("local", run_id)[0]] == [e.kind for e in everything]
    assert reopened.run_state("local", run_id).status == "finished"
    # what is written after the run ended (here: the user's choice of output) shows without a restart
    studio.use_checkpoint("local", run_id, None)
    after, _ = studio.events("local", run_id, cursor)
    assert [e.message for e in after if e.kind == "notice"] == ["output switched to step-000002 (chosen by you)"]


def test_generate_compare_inpaint_with_a_trained_lora(studio, photos):
    from PIL import Image

    dataset = studio.photos.add("local", sorted(photos.iterdir()))
    run_id = studio.start_training("local", dataset, ["object-lora"], {"class_noun": "dog", "max_steps": 2, "preview_every": 5, **FAST})
    _wait(studio, "local", run_id)
    settings = DrawSettings("a photo of sks dog", steps=2, seed=3, num_images=2)
    trained = studio.generate("local", f"run:{run_id}", settings)
    assert [im.size for im in trained.images] == [(32, 32)] * 2 and trained.seeds == [3, 4]
    base = studio.generate("local", "base", settings)
    grid = studio.compare("local", ["base", f"run:{run_id}"], ["a photo of sks dog", "a photo of a dog"], settings, [3])
    assert grid.grid.width > 2 * 32 and len(grid.images) == 4
    # same seed, same model: the grid cell equals the single generation (the LoRA is switched, not leaked)
    import numpy as np

    assert np.abs(np.asarray(grid.images[0], float) - np.asarray(base.images[0], float)).max() <= 2
    assert np.abs(np.asarray(grid.images[1], float) - np.asarray(trained.images[0], float)).max() <= 2
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    painted = studio.inpaint("local", f"run:{run_id}", trained.images[0], mask, DrawSettings("a photo of sks dog", steps=2))
    assert painted.images[0].size == (32, 32)
    with pytest.raises(InferenceError, match="mask is empty"):
        studio.inpaint("local", "base", trained.images[0], Image.new("L", (32, 32), 0), DrawSettings("x", steps=2))
    with pytest.raises(InferenceError, match="prompt is empty"):
        studio.generate("local", "base", DrawSettings("  "))


def test_a_full_fine_tune_downloads_as_files_that_open(studio, photos, tmp_path):
    """One zip of the diffusers folder that diffusers loads, the single file named for the subject, the card."""
    import zipfile

    from diffusers import StableDiffusionPipeline

    dataset = studio.photos.add("local", sorted(photos.iterdir()))
    run_id = studio.start_training("local", dataset, ["object-full"], {"class_noun": "dog", "max_steps": 2,
                                                                       "preview_every": 5, "save_single_file": True, **FAST})
    assert _wait(studio, "local", run_id).status == "finished"
    downloads = {d.name: d for d in studio.downloads("local", run_id)}
    assert set(downloads) == {"sks-dog-diffusers.zip", "sks-dog.safetensors", "README.md", "samples.png"}
    assert "for diffusers" in downloads["sks-dog-diffusers.zip"].label
    assert "A1111 / ComfyUI" in downloads["sks-dog.safetensors"].label
    with zipfile.ZipFile(downloads["sks-dog-diffusers.zip"].path) as archive:
        archive.extractall(tmp_path / "unzipped")
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "unzipped" / "sks-dog-diffusers")
    image = pipe("a photo of sks dog", num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (32, 32, 3)
    assert studio.downloads("local", run_id)[0].path == downloads[studio.downloads("local", run_id)[0].name].path  # zip kept


def test_prompts_follow_the_subject_and_fit_the_base_model(studio, photos, tmp_path):
    from studio.engine import Studio as Fresh

    assert studio.prompt_suggestions("local") == []  # no subject yet: nothing to suggest
    assert studio.prompt_suggestions("local", "zwx", "mug")[0] == "a photo of zwx mug"
    assert "beach" in studio.prompt_suggestions("local", "zwx", "mug")[1]  # a real model knows beaches
    builtin = Fresh(tmp_path / "builtin-home")
    assert all("background" in p for p in builtin.prompt_suggestions("local", "sks", "star")[1:])  # the world has none
    dataset = studio.photos.add("local", sorted(photos.iterdir()))
    run_id = studio.start_training("local", dataset, ["object-lora"], {"class_noun": "dog", "max_steps": 1,
                                                                       "preview_every": 5, **FAST})
    _wait(studio, "local", run_id)
    assert studio.prompt_suggestions("local", "zwx", "mug")[0] == "a photo of sks dog"  # the newest run's trigger
