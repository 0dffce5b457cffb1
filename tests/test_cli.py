"""The CLI as a user runs it: real processes, real Ctrl-C, real kill -9."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studio.cli import _parser
from studio.events import read_events

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, home, base):
    return [sys.executable, "-m", "studio", "--home", str(home), "--base-model", str(base), *map(str, args)]


def _env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


GLOBALS = ["--home", "H", "--base-model", "M", "--base-config", "C", "--allow-pickle", "--device", "cpu"]
GLOBAL_VALUES = {"home": "H", "base_model": "M", "base_config": "C", "allow_pickle": True, "device": "cpu"}
UNSET = {"home": None, "base_model": None, "base_config": None, "allow_pickle": False, "device": None}
COMMANDS = {  # each subcommand with its required arguments
    "train": ["train", "--output", "runs/x"], "generate": ["generate", "--prompt", "p", "--out", "o"],
    "compare": ["compare", "--prompt", "p", "--out", "g.png"],
    "inpaint": ["inpaint", "--prompt", "p", "--image", "i.png", "--mask", "m.png", "--out", "o"],
    "presets": ["presets"], "curate": ["curate", "photos"],
}


def _globals(argv):
    return {key: getattr(_parser().parse_args(argv), key) for key in GLOBAL_VALUES}


@pytest.mark.parametrize("command", COMMANDS)
def test_global_options_work_before_and_after_the_command(command):
    assert _globals(GLOBALS + COMMANDS[command]) == GLOBAL_VALUES
    assert _globals(COMMANDS[command] + GLOBALS) == GLOBAL_VALUES
    assert _globals(COMMANDS[command][:1] + GLOBALS + COMMANDS[command][1:]) == GLOBAL_VALUES
    assert _globals(COMMANDS[command]) == UNSET


def test_a_global_given_before_the_command_is_not_clobbered_by_the_subcommand():
    # each option alone before the command: the subcommand's copy of it must not reset it to its default
    for key, value in GLOBAL_VALUES.items():
        option = ["--" + key.replace("_", "-")] + ([] if value is True else [value])
        assert getattr(_parser().parse_args(option + ["train", "--output", "r"]), key) == value
    # given in both places, the one after the command wins (the later value, as argparse does everywhere)
    assert _globals(["--base-model", "A", "presets", "--base-model", "B"])["base_model"] == "B"


def test_base_model_after_the_command_takes_effect(tmp_path):
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"not really")
    refused = subprocess.run([sys.executable, "-m", "studio", "presets", "--home", str(tmp_path / "h"), "--base-model",
                              str(pickle)], capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120)
    assert refused.returncode == 2 and "pickle" in refused.stderr, refused.stderr[-2000:]


FAST_SET = ["--set", "class_image_steps=2", "--set", "preview_steps=2", "--set", "preview_seeds=[0]", "--set", "min_steps=1"]


def test_train_json_then_generate_and_compare(tmp_path, tiny_sd, photos):
    run = tmp_path / "run"
    out = subprocess.run(
        _cli("train", "--images", photos, "--identifier", "sks", "--class-noun", "dog", "--preset", "object-lora",
             "--output", run, "--steps", 2, "--num-class-images", 2, "--json", *FAST_SET, home=tmp_path / "h", base=tiny_sd),
        capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert events[-1]["kind"] == "finished" and any(e["kind"] == "step" and e["prior_loss"] > 0 for e in events)
    gen = subprocess.run(_cli("generate", "--model", run, "--prompt", "a photo of sks dog", "--steps", 2, "--seed", 5,
                              "--out", tmp_path / "gen", home=tmp_path / "h", base=tiny_sd),
                         capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert (tmp_path / "gen" / "generate-p0-s5.png").exists()
    cmp = subprocess.run(_cli("compare", "--model", "base", "--model", run, "--prompt", "a photo of sks dog", "--prompt",
                              "a photo of a dog", "--steps", 2, "--out", tmp_path / "grid.png", home=tmp_path / "h", base=tiny_sd),
                         capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300)
    assert cmp.returncode == 0, cmp.stderr[-2000:]
    assert "4 pictures" in cmp.stdout


def test_bad_input_is_a_clear_error_not_a_traceback(tmp_path, tiny_sd, photos):
    bad_preset = subprocess.run(_cli("train", "--images", photos, "--class-noun", "dog", "--preset", "object-lora",
                                     "--set", "learnin_rate=1", "--output", tmp_path / "r", home=tmp_path / "h", base=tiny_sd),
                                capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=120)
    assert bad_preset.returncode == 2 and "unknown setting 'learnin_rate'" in bad_preset.stderr
    assert "Traceback" not in bad_preset.stderr
    pickle = tmp_path / "model.ckpt"
    pickle.write_bytes(b"not really")
    refused = subprocess.run(_cli("presets", home=tmp_path / "h", base=pickle), capture_output=True, text=True,
                             env=_env(), cwd=ROOT, timeout=120)
    assert refused.returncode == 2 and "pickle" in refused.stderr


def test_presets_and_curate_json(tmp_path, tiny_sd, photos):
    (photos / "notes.jpg").write_text("<html>not a photo</html>")
    out = subprocess.run(_cli("curate", photos, "--json", home=tmp_path / "h", base=tiny_sd), capture_output=True,
                         text=True, env=_env(), cwd=ROOT, timeout=120)
    rows = {r["name"]: r for r in map(json.loads, out.stdout.splitlines())}
    assert rows["notes.jpg"]["accepted"] is False and rows["notes.jpg"]["reason"]
    assert all(rows[f"photo{i}.png"]["accepted"] for i in range(3))
    presets = subprocess.run(_cli("presets", home=tmp_path / "h", base=tiny_sd), capture_output=True, text=True,
                             env=_env(), cwd=ROOT, timeout=120)
    assert "face-full" in presets.stdout and "learning_rate = 1e-06" in presets.stdout


def _run_until(cmd, events_file: Path, predicate, timeout=300):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(), cwd=ROOT)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if events_file.exists() and any(predicate(e) for e in read_events(events_file)):
            return proc
        if proc.poll() is not None:
            raise AssertionError(f"ended early: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("condition never reached")


def test_kill_9_during_class_images_and_training_then_resume_finishes(tmp_path, tiny_sd, photos):
    run, home = tmp_path / "run", tmp_path / "h"
    train = _cli("train", "--images", photos, "--class-noun", "dog", "--preset", "object-lora", "--output", run,
                 "--steps", 6, "--num-class-images", 6, "--set", "checkpoint_every=2", "--set", "class_image_batch=1",
                 "--set", "preview_every=100", *FAST_SET, home=home, base=tiny_sd)
    events = run / "events.jsonl"
    # 1. killed while drawing class images
    proc = _run_until(train, events, lambda e: e.kind == "class_images" and 0 < e.done < e.total)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    drawn = len(list(home.rglob("class-images/*/0*.png")))
    assert 0 < drawn < 6
    # 2. resumed, then killed after the first checkpoint
    proc = _run_until(_cli("train", "--output", run, "--resume", home=home, base=tiny_sd), events,
                      lambda e: e.kind == "checkpoint")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed_class = [e for e in read_events(events) if e.kind == "class_images"]
    assert any(e.reused == drawn for e in resumed_class)  # only the missing ones were drawn again
    (run / "checkpoints" / "step-000099.tmp").mkdir()  # what a kill during a save leaves behind: ignored
    # 3. resumed again: continues from the last complete checkpoint and finishes
    done = subprocess.run(_cli("train", "--output", run, "--resume", home=home, base=tiny_sd), capture_output=True,
                          text=True, env=_env(), cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    log = read_events(events)
    starts = [e.resumed_from for e in log if e.kind == "started"]
    assert starts[-1] >= 2 and log[-1].kind == "finished" and log[-1].step == 6
    assert (run / "output" / "pytorch_lora_weights.safetensors").exists()
