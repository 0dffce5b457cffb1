"""views.py: pure functions from engine answers to what the UI shows."""
from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
from PIL import Image

from studio.events import ClassImages, Failed, Preview, Started, Step
from studio.runs import RunState, RunStatus
from studio.ui import views


def steps(n=4, prior=0.5):
    return [Step(step=i, max_steps=10, loss=1.0 + prior, instance_loss=1.0, prior_loss=prior, lr=1e-4, seconds=0.5)
            for i in range(1, n + 1)]


def test_loss_frame_has_smoothed_series_and_types():
    frame = views.loss_frame(steps())
    assert set(frame["series"]) == {"total", "instance", "prior"} and len(frame) == 12
    assert frame[frame.series == "total"]["loss"].tolist() == pytest.approx([1.5] * 4)  # debiased EMA of a constant
    assert views.loss_frame(steps(prior=0.0))["series"].unique().tolist() == ["total", "instance"]
    empty = views.loss_frame([])
    assert empty.empty and str(empty["loss"].dtype) == "float64"


def test_loss_frame_draws_each_subject_of_a_several_subject_run():
    turns = [Step(step=i, loss=1.0, instance_loss=1.0, subject_losses={("sks" if i % 2 else "zwx"): 0.1 * i})
             for i in range(1, 5)]  # batch 1: the subjects take turns
    frame = views.loss_frame(turns)
    assert frame[frame.series == "subject sks"]["step"].tolist() == [1, 3]
    assert frame[frame.series == "subject zwx"]["step"].tolist() == [2, 4]
    assert not any(name.startswith("subject") for name in views.loss_frame(steps())["series"])


def test_smooth_follows_a_step_change():
    out = views.smooth([0.0, 0.0, 1.0, 1.0, 1.0], 0.5)
    assert out[0] == 0 and 0 < out[2] < out[3] < out[4] < 1


def test_preview_items_newest_first_with_step_and_prompt():
    events = [Preview(step=0, images=("a.png", "b.png"), prompts=("sks dog", "a dog"), seeds=(0, 0)),
              Preview(step=2, images=("c.png",), prompts=("sks dog",), seeds=(1,))]
    assert views.preview_items(events) == [("c.png", "step 2 · sks dog · seed 1"), ("a.png", "step 0 · sks dog · seed 0"),
                                           ("b.png", "step 0 · a dog · seed 0")]


def test_progress_and_class_image_text():
    assert views.progress_text([]) == ""
    assert views.progress_text([Started(max_steps=40)]) == "step 0/40 · starting"
    events = [Step(step=12, max_steps=40, seconds=0.5)] * 3
    assert views.progress_text(events) == "step 12/40 · 2.0 it/s · 0:14 left"
    assert "s/it" in views.progress_text([Step(step=1, max_steps=3, seconds=4.0)])
    assert views.class_images_text([ClassImages(done=3, total=10, reused=2)]) == "class images 3/10 · drawing (2 reused from cache)"
    assert views.format_duration(3725) == "1:02:05"


def test_status_shows_error_with_advice_and_queue_position():
    failed = RunState("r1", RunStatus.FAILED, -1, 3, 10, checkpoint="step-000002")
    text = views.status_markdown(failed, [Failed(error="out of memory", advice="use LoRA")])
    assert "out of memory" in text and "use LoRA" in text
    assert "checkpoint `step-000002` kept" in text and "Resume" in text  # what Stop/failure kept, and what to do
    queued = RunState("r2", RunStatus.QUEUED, 2, 0, 10)
    assert "1 run(s) waiting ahead of yours, waiting for a free device" in views.status_markdown(queued, [])
    soon = RunState("r2", RunStatus.QUEUED, 1, 0, 10, queue_wait=95.0)
    assert "next in line, starts in about 1:35" in views.status_markdown(soon, [])
    assert views.controls(queued) == {"pause": False, "stop": True, "sample": False, "resume": False, "use": False}
    assert views.controls(failed)["resume"] and not views.controls(failed)["stop"] and not views.controls(failed)["use"]
    done = RunState("r3", RunStatus.FINISHED, -1, 10, 10)
    # nothing left to run: only choosing which checkpoint is its output
    assert [name for name, can in views.controls(done).items() if can] == ["use"]


def test_curation_captions_and_markdown():
    ok = SimpleNamespace(name="a.jpg", accepted=True, reason=None, advice=None, warnings=["small"])
    bad = SimpleNamespace(name="b.pdf", accepted=False, reason="a PDF document", advice="export as JPEG", warnings=[])
    assert views.verdict_caption(ok) == "⚠ 1 warning: small · a.jpg"  # status first: a long caption is cut at its end
    assert views.verdict_caption(bad) == "✗ rejected: a PDF document · b.pdf"
    text = views.curation_markdown(SimpleNamespace(verdicts=[ok, bad], warnings=["two look alike"], count_advice="add more"))
    assert "1 of 2 photos accepted" in text and "export as JPEG" in text and "two look alike" in text


def test_config_table_and_overrides():
    table = views.config_table({"learning_rate": 1e-4, "seed": 0}, {"learning_rate": "preset x: because"})
    assert "| `learning_rate` | 0.0001 | preset x: because |" in table and "| `seed` | 0 | default |" in table
    assert "why" not in views.config_table({"a": 1}, None)
    base = {"max_steps": 300, "learning_rate": 1e-4, "lora_rank": 8, "seed": 0}
    assert views.changed_overrides({"max_steps": 0, "learning_rate": 1e-4, "lora_rank": 16.0, "seed": None}, base) == {"lora_rank": 16}
    assert views.advanced_values({"max_steps": 300}, {"max_steps": "derived: x"}, ["max_steps"]) == {"max_steps": 0}
    assert views.parse_extra_settings("preview_seeds = [0, 1]\nclass_image_steps = 2") == {"preview_seeds": [0, 1], "class_image_steps": 2}
    with pytest.raises(ValueError, match="key = value"):
        views.parse_extra_settings("oops")


def test_presets_identifiers_prompts_seeds_users():
    names = ["face-lora", "face-full", "style-lora"]
    assert views.preset_name("face", "Full fine-tune", names) == ("face-full", {})
    assert views.preset_name("style", "Full fine-tune", names) == ("style-lora", {"method": "full"})
    # the token methods run on the subject type's LoRA preset, the method set on top
    assert views.preset_name("face", "Textual inversion", names) == ("face-lora", {"method": "textual_inversion"})
    assert views.preset_name("object", "Pivotal (token + LoRA)", names) == ("object-lora", {"method": "pivotal"})
    report = SimpleNamespace(tokens=("sks</w>",), errors=(), warnings=("rare",), suggestions=("zwx",))
    assert "`zwx`" in views.identifier_markdown(report) and "⚠ rare" in views.identifier_markdown(report)
    assert views.parse_lines(" a \n\n b ") == ["a", "b"] and views.parse_seeds("0, 1 2") == [0, 1, 2]
    with pytest.raises(ValueError):
        views.parse_seeds("x")
    assert views.sanitise_user("Alice Smith!") == "alice-smith" and views.sanitise_user("Al") == "al-user"
    assert views.sanitise_user("***") is None


def test_editor_mask_is_alpha_of_drawn_layers():
    background = Image.new("RGB", (20, 20), "blue")
    layer = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    layer.paste((255, 0, 0, 255), (5, 5, 10, 10))
    image, mask = views.editor_image_and_mask({"background": background, "layers": [layer], "composite": background})
    assert mask.getpixel((6, 6)) == 255 and mask.getpixel((0, 0)) == 0 and image.size == (20, 20)
    with pytest.raises(ValueError, match="mask is empty"):
        views.editor_image_and_mask({"background": background, "layers": [Image.new("RGBA", (20, 20))]})


def test_schedulers_match_the_engine_and_views_has_no_gradio():
    from studio.inference import pipelines
    from studio.ui import tab_generate

    assert tab_generate.SCHEDULERS is pipelines.SCHEDULERS  # the page lists the engine's own table, not a copy
    code = "import sys, studio.ui.views; assert 'gradio' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_score_frame_keeps_each_checkpoints_newest_scores_and_skips_what_was_not_measured():
    from studio.events import Notice, Score

    events = [Score(step=0, checkpoint="base", subject_fidelity=0.1, prompt_fidelity=0.5, drift=0.0),
              Score(step=20, checkpoint="step-000020", subject_fidelity=0.4, prompt_fidelity=0.4, drift=0.1),
              Score(step=20, checkpoint="step-000020", subject_fidelity=0.6, prompt_fidelity=0.4, drift=0.1),
              Score(step=40, checkpoint="step-000040", subject_fidelity=0.9, prompt_fidelity=float("nan"), drift=0.3)]
    frame = views.score_frame(events)
    subject = frame[frame.series == "subject fidelity ↑"]
    assert subject["step"].tolist() == [0, 20, 40] and subject["score"].tolist() == [0.1, 0.6, 0.9]  # rescored: newest
    assert 40 not in frame[frame.series == "prompt fidelity ↑"]["step"].tolist()  # not measured: no point
    assert views.score_frame([]).empty
    # the base model's values are flat reference lines across the chart
    base_drift = frame[frame.series == "base: drift ↓"]
    assert base_drift["step"].tolist() == [0, 40] and base_drift["score"].tolist() == [0.0, 0.0]
    # while training, the marker stands at the best checkpoint so far: step 40 learned more, but drifted
    # 0.3 past the base model's 0.0 (the pick's margin is 0.10), so step 20 is the one to keep
    marker = lambda f: sorted(set(f[f.series == views.PICK_SERIES]["step"]))
    assert marker(frame) == [20]
    # once the user makes another checkpoint the output, the marker follows their choice
    chosen = views.score_frame([*events, Notice(message="output switched to step-000040 (chosen by you)")])
    assert marker(chosen) == [40]
    assert set(views.SCORE_COLOURS) >= set(frame.series)  # every line drawn has its colour
    # the first frame (the base model scored, nothing else yet) already names every series: the page's chart
    # keeps the series it was first given and would never draw the reference lines or the marker otherwise
    first = views.score_frame(events[:1])
    assert set(first.series) == set(views.SCORE_COLOURS) and marker(first) == [0]
