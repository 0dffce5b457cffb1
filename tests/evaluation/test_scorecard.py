"""The scorecard as a user meets it: Score events during a run, `studio score`, the pick and "use this checkpoint"."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from studio.engine import Studio
from studio.evaluation import session
from studio.evaluation.pick import Pick
from studio.events import read_events
from studio.inference.generate import DrawSettings
from studio.runs import step_name
from tests.conftest import FAST
from tests.evaluation.tiny_scorers import build_tiny_clip, build_tiny_dino

ROOT = Path(__file__).resolve().parents[2]
SHORT = {**FAST, "max_steps": 4, "checkpoint_every": 2, "preview_every": 2, "keep_checkpoints": 3}


def _scores(run: Path):
    return [e for e in read_events(run / "events.jsonl") if e.kind == "score"]


def _unet(folder: Path) -> dict:
    return load_file(str(next((folder / "model" / "unet").glob("*.safetensors"))))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A short run of the built-in demo subject whose scorecard is made to pick the first checkpoint, so the
    output switching is exercised (the real rule is tested on its own in test_pick)."""
    home = tmp_path_factory.mktemp("home")
    studio = Studio(home)
    images, presets, overrides = studio.demo_settings()
    first = lambda rows, base: Pick(rows[0].checkpoint, rows[0].step, "the first checkpoint (test)")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(session, "pick_checkpoint", first)
        outcome = studio.train_folder(images, home / "run", presets, {**overrides, **SHORT})
    assert outcome.status == "finished"
    return studio, home, home / "run"


def test_a_built_in_run_scores_the_base_model_and_every_checkpoint(demo_run):
    _, _, run = demo_run
    scores = _scores(run)
    assert [s.checkpoint for s in scores] == ["base", "step-000002", "step-000004"]
    assert {s.scorer for s in scores} == {"world judge"} and all(s.note == "" for s in scores)
    for s in scores:
        for value in (s.subject_fidelity, s.prompt_fidelity, s.drift, s.diversity):
            assert 0.0 <= value <= 1.0
    notices = [e.message for e in read_events(run / "events.jsonl") if e.kind == "notice"]
    assert any(m.startswith("scorecard: kept step-000002") and "output/last" in m for m in notices)


def test_the_picked_checkpoint_is_the_output_and_the_last_step_is_kept_beside_it(demo_run):
    _, _, run = demo_run
    output = run / "output"
    checkpoint = load_file(str(run / "checkpoints" / step_name(2) / "trainable.safetensors"))
    picked = _unet(output)
    assert all((picked[k] == checkpoint[f"unet.{k}"]).all() for k in picked)
    assert (output / "last" / "model").is_dir() and not _same(_unet(output / "last"), picked)
    card = (output / "README.md").read_text()
    assert "## Scorecard" in card and "| step-000002 * |" in card and "step-000002" in card.split("## Scorecard")[0]


def test_studio_score_json_gives_the_documented_shape(demo_run):
    _, home, run = demo_run
    before = len(_scores(run))
    done = subprocess.run([sys.executable, "-m", "studio", "score", str(run), "--json", "--home", str(home)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    card = json.loads(done.stdout)
    assert card["scorer"] == "world judge"
    assert [r["checkpoint"] for r in card["rows"]] == ["base", "step-000002", "step-000004"]
    for row in card["rows"]:
        assert all(0.0 <= row[k] <= 1.0 for k in ("subject_fidelity", "prompt_fidelity", "drift", "diversity"))
    assert card["best"] in ("step-000002", "step-000004") and card["why"]
    assert len(_scores(run)) == before  # every score was already known: reused, not drawn again


def test_use_checkpoint_switches_the_output_and_back(demo_run):
    studio, _, run = demo_run
    last = _unet(run / "output" / "last")
    draw = lambda model: np.asarray(studio.generate("local", str(model), DrawSettings("a photo of sks star", steps=2,
                                                                                     seed=3)).images[0], dtype=int)
    picked_picture = draw(run)  # the picked checkpoint, now loaded and cached by the studio
    studio.use_checkpoint_folder(run, None)  # the last step
    assert not (run / "output" / "last").exists() and _same(_unet(run / "output"), last)
    # the same model name now draws the last step: the cached copy of the old output is not used again
    assert np.abs(draw(run) - picked_picture).max() > 0
    studio.use_checkpoint_folder(run, 2)
    assert _same(_unet(run / "output" / "last"), last) and not _same(_unet(run / "output"), last)
    assert np.array_equal(draw(run), picked_picture)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint at step 3"):
        studio.use_checkpoint_folder(run, 3)


def test_a_half_written_checkpoint_is_skipped_with_a_note(demo_run):
    studio, _, run = demo_run
    (run / "checkpoints" / "step-000003.tmp").mkdir()
    try:
        card = studio.score_folder(run)
    finally:
        (run / "checkpoints" / "step-000003.tmp").rmdir()
    assert "skipped step-000003.tmp: half-written" in card.notes
    assert [r.checkpoint for r in card.rows] == ["step-000002", "step-000004"]


def test_real_models_are_scored_with_dino_and_clip_during_training(tmp_path, tiny_sd, photos):
    models = [str(build_tiny_dino(tmp_path / "dino")), str(build_tiny_clip(tmp_path / "clip"))]
    studio = Studio(tmp_path / "home", base_model=str(tiny_sd))
    settings = {"class_noun": "dog", **SHORT, "scorer_models": models}
    assert studio.train_folder(photos, tmp_path / "run", ["object-lora"], settings).status == "finished"
    scores = _scores(tmp_path / "run")
    assert [s.checkpoint for s in scores] == ["base", "step-000002", "step-000004"]
    assert all(s.scorer.startswith("DINOv2 dino + CLIP clip") and s.note.startswith("CLIP-I") for s in scores)
    assert all(0.0 <= s.subject_fidelity <= 1.0 for s in scores)
    # `studio score` with the same models under other names scores everything again, from the files on disk
    # (LoRA checkpoints, the output, the base model): the same numbers as during training
    renamed = [shutil.copytree(m, f"{m}-again") for m in models]
    card = studio.score_folder(tmp_path / "run", scorer_models=[str(m) for m in renamed])
    assert card.scorer == "DINOv2 dino-again + CLIP clip-again"
    again = {r.checkpoint: r for r in (card.base, *card.rows)}
    for s in scores:
        assert again[s.checkpoint].subject_fidelity == pytest.approx(s.subject_fidelity, abs=1e-3)
        assert again[s.checkpoint].drift == pytest.approx(s.drift, abs=1e-3)


def test_an_unloadable_scorer_is_one_line_and_the_run_still_finishes(tmp_path, tiny_sd, photos):
    studio = Studio(tmp_path / "home", base_model=str(tiny_sd))
    settings = {"class_noun": "dog", **SHORT, "scorer_models": ["nobody/no-such-dino", "nobody/no-such-clip"]}
    outcome = studio.train_folder(photos, tmp_path / "run", ["object-lora"], settings)
    assert outcome.status == "finished" and (tmp_path / "run" / "output" / "pytorch_lora_weights.safetensors").exists()
    scores = _scores(tmp_path / "run")
    assert len(scores) == 3 and all(math.isnan(s.subject_fidelity) for s in scores)
    assert all("nobody/no-such-dino" in s.note and "--scorer-model" in s.note and "\n" not in s.note for s in scores)
    notices = [e.message for e in read_events(tmp_path / "run" / "events.jsonl") if e.kind == "notice"]
    assert sum("could not be loaded" in m for m in notices) == 1  # said once, not at every checkpoint


def test_one_user_cannot_score_or_switch_another_users_run(tmp_path):
    from studio.workspace import NotFound

    studio = Studio(tmp_path / "home", shared=True)
    run_id, _ = studio.workspace.new_run("alice")
    for attempt in (lambda: studio.use_checkpoint("bob", run_id, 2), lambda: studio.score_run("bob", run_id)):
        with pytest.raises(NotFound):
            attempt()
    with pytest.raises(PermissionError):  # a shared Space never opens folders by path
        studio.score_folder(tmp_path)


def test_a_two_subject_run_scores_each_subject_and_keeps_the_mean(tmp_path):
    """Each subject is judged on its own prompts and photos; a row is the mean, each subject's numbers in its note."""
    from studio.concepts import load_concepts

    studio = Studio(tmp_path / "home")
    concepts = load_concepts(ROOT / "assets" / "two-subjects.toml")
    settings = {**SHORT, "checkpoint_every": 0, "preview_every": 4}
    assert studio.train_folder(None, tmp_path / "run", ["demo-full"], settings, concepts=concepts).status == "finished"
    scores = _scores(tmp_path / "run")
    assert [s.checkpoint for s in scores] == ["base", "step-000004"]
    for score in scores:
        assert "mean of 2 subjects (sks: subject" in score.note and "; zwx: subject" in score.note
        each = [float(value) for value in re.findall(r"drift ([0-9.]+)", score.note)]
        assert len(each) == 2
        assert score.drift == pytest.approx(sum(each) / 2, abs=0.006)  # the row is the subjects' mean (2 decimals)
    studio.score_folder(tmp_path / "run")  # `studio score` shows them, and measures nothing with one subject's photos
    assert len(_scores(tmp_path / "run")) == 2
