"""One run across processes, as `accelerate launch` / `torchrun` start it: real processes on the CPU (gloo).

The promise: a 2-process run writes one run (one events log, one set of outputs) and ends with the weights one
process makes with the same global batch; killing one process stops the run, and --resume continues it, on any
number of processes, to those same weights.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from studio.engine import Studio
from studio.events import read_events
from studio.training.distributed import DistributedSetupError, World, join_world
from tests.conftest import FAST

ROOT = Path(__file__).resolve().parents[2]
STEPS = 40
# batch 2 across 2 processes (1 row each of the instance and of the class batch), 2 micro-steps per update: the
# averaging of the gradients and of the accumulated ones both have to be right for the weights to match
SETTINGS = {**FAST, "max_steps": STEPS, "batch_size": 2, "gradient_accumulation": 2, "checkpoint_every": 5,
            "keep_checkpoints": 20, "preview_every": 0, "score_checkpoints": False, "seed": 3}
TOLERANCE = 1e-5  # float summation order differs (two half-batch gradients averaged); measured ~1e-7


def _train_args(home: Path, base: Path, photos: Path, output: Path) -> list[str]:
    sets = [item for key, value in SETTINGS.items() for item in ("--set", f"{key}={json.dumps(value)}")]
    return ["-m", "studio", "train", "--home", str(home), "--base-model", str(base), "--images", str(photos),
            "--identifier", "sks", "--class-noun", "dog", "--preset", "object-lora", "--output", str(output),
            "--json", *sets]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _torchrun(processes: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--master_port", str(29500 + os.getpid() % 1000)]


def _lora(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "output" / "pytorch_lora_weights.safetensors"))


def _largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def one_process_run(tiny_sd, tmp_path_factory):
    """The reference: the same settings and global batch, one process (in this one)."""
    from tests.conftest import write_photos

    root = tmp_path_factory.mktemp("one-process")
    photos = write_photos(root / "photos")
    studio = Studio(root / "home", base_model=str(tiny_sd))
    outcome = studio.train_folder(photos, root / "run", ["object-lora"],
                                  {**SETTINGS, "identifier": "sks", "class_noun": "dog"})
    assert outcome.status == "finished"
    return root, photos, _lora(root / "run")


def test_each_process_trains_its_own_rows_of_the_global_batch():
    first, second = World(size=2, rank=0), World(size=2, rank=1)
    # [instance 0..3, class 4..7]: each process keeps the same share of each block
    assert first.rows(4, parts=2) == [0, 1, 4, 5] and second.rows(4, parts=2) == [2, 3, 6, 7]
    assert sorted(first.rows(4, 2) + second.rows(4, 2)) == list(range(8))
    assert [i for i in range(5) if second.mine(i)] == [1, 3]  # class images split by index
    with pytest.raises(DistributedSetupError, match=r"batch_size = 3 .* --set batch_size=2"):
        first.check_batch(3)


def test_a_batch_the_processes_cannot_share_is_refused_before_anything_is_written(tiny_sd, photos, tmp_path):
    studio = Studio(tmp_path / "home", base_model=str(tiny_sd))
    with pytest.raises(DistributedSetupError, match="2 processes can't share it evenly"):
        studio.train_folder(photos, tmp_path / "run", ["object-lora"], {"batch_size": 1, "class_noun": "dog"},
                            world=World(size=2, rank=0))
    assert not (tmp_path / "run").exists()


def test_sharding_engines_are_refused_with_what_to_do(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(DistributedSetupError, match="FSDP was chosen .* accelerate config"):
        join_world("cpu")


def test_two_processes_train_one_run_with_the_weights_of_one_process(one_process_run, tiny_sd, tmp_path):
    _, photos, reference = one_process_run
    run = tmp_path / "run"
    done = subprocess.run([*_torchrun(2), *_train_args(tmp_path / "home", tiny_sd, photos, run)], env=_env(),
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    events = read_events(run / "events.jsonl")
    kinds = [e.kind for e in events]
    assert kinds.count("started") == 1 and kinds.count("finished") == 1  # one voice: the main process
    assert [e.step for e in events if e.kind == "step"] == list(range(1, STEPS + 1))
    assert any("2 processes: global batch 2 (1 per process" in getattr(e, "message", "") for e in events)
    split = json.loads((run / "config.json").read_text())["distributed"]
    assert split["processes"] == 2 and split["global_batch"] == 2 and split["per_process_batch"] == 1
    assert split["lr_scaling"].startswith("none")  # batch_size is the global batch: nothing to scale
    assert sorted(p.name for p in (run / "output").iterdir() if p.suffix == ".safetensors") == [
        "pytorch_lora_weights.safetensors", "sks-dog-kohya.safetensors"]
    assert _largest_difference(_lora(run), reference) < TOLERANCE


def test_killing_one_process_stops_the_run_and_resume_continues_it_on_one(one_process_run, tiny_sd, tmp_path):
    """A process killed mid-run (out of memory, a lost node): the others stop within a bounded time, the last
    complete checkpoint stays usable, and --resume finishes the run, here on one process, with the same weights."""
    _, photos, reference = one_process_run
    run, home = tmp_path / "run", tmp_path / "home"
    launcher = subprocess.Popen([*_torchrun(2), *_train_args(home, tiny_sd, photos, run)], env=_env(), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not list(run.glob("checkpoints/step-*[0-9]")) and time.time() < deadline and launcher.poll() is None:
            time.sleep(0.05)
        assert launcher.poll() is None, "the run ended before it could be interrupted"
        second = next(p for p in psutil.Process(launcher.pid).children(recursive=True)
                      if p.environ().get("RANK") == "1")
        second.send_signal(signal.SIGKILL)
        tic = time.time()
        launcher.wait(timeout=120)
        stopped_in = time.time() - tic
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0 and stopped_in < 60
    events = read_events(run / "events.jsonl")
    assert "finished" not in [e.kind for e in events]
    assert events[-1].kind == "failed" and "another process of this run stopped" in events[-1].error, events[-1]
    assert "--resume" in events[-1].advice
    last = max(run.glob("checkpoints/step-*[0-9]"))
    assert (last / "state.json").is_file() and not list(run.glob("checkpoints/*.tmp"))

    resumed = subprocess.run([sys.executable, "-m", "studio", "train", "--home", str(home), "--base-model", str(tiny_sd),
                              "--output", str(run), "--resume", "--json"],
                             env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    events = read_events(run / "events.jsonl")
    restart = [e for e in events if e.kind == "started"][-1]
    assert restart.resumed_from == int(last.name.split("-")[1]) > 0
    assert events[-1].kind == "finished" and events[-1].step == STEPS
    assert "distributed" not in json.loads((run / "config.json").read_text())  # now one process
    assert _largest_difference(_lora(run), reference) < TOLERANCE
