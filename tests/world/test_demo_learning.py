"""DreamBooth really teaches the built-in model the demo subject: the judge sees the stripe after training."""
from __future__ import annotations

import pytest

from studio.data.photoset import DEMO_DIR
from studio.engine import Studio
from studio.inference.generate import DrawSettings
from studio.models.sources import BUILTIN_MODEL_DIR
from studio.world.demo import check_passes, subject_fidelity_prompts
from studio.world.judge import judge

pytestmark = pytest.mark.skipif(not (BUILTIN_MODEL_DIR / "model_index.json").exists(), reason="built-in model not built")


def _subject_fidelity(studio: Studio, model: str) -> float:
    hits = total = 0
    for check in subject_fidelity_prompts():
        images = studio.generate("local", model, DrawSettings(check.prompt, steps=20, seed=100, num_images=4)).images
        hits += sum(check_passes(judge(image), check) for image in images)
        total += len(images)
    return hits / total


def test_a_short_demo_run_teaches_the_subject(tmp_path):
    studio = Studio(tmp_path / "home")  # the built-in model is the default
    _, presets, overrides = studio.demo_settings()
    settings = {**overrides, "max_steps": 300, "num_class_images": 16, "preview_every": 300, "preview_steps": 10}
    outcome = studio.train_folder(DEMO_DIR, tmp_path / "run", presets, settings)
    assert outcome.status == "finished"
    before, after = _subject_fidelity(studio, "base"), _subject_fidelity(studio, str(tmp_path / "run"))
    assert before <= 0.1  # the base model has never seen the stripe
    assert after >= before + 0.5, f"subject fidelity {before:.0%} -> {after:.0%}"
