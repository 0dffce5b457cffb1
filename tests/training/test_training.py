"""Real training runs on tiny random pipelines: what a user gets out of the engine."""
from __future__ import annotations

import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors.torch import load_file

from studio.engine import Studio
from studio.events import read_events
from studio.models.lora_formats import count_lora_layers
from studio.training.commands import RunCommands
from tests.conftest import FAST


def _train(tmp_path, base, photos, run="run", **overrides):
    studio = Studio(tmp_path / "home", base_model=str(base))
    settings = {"class_noun": "dog", "max_steps": 4, "preview_every": 2, **FAST, **overrides}
    outcome = studio.train_folder(photos, tmp_path / run, ["object-lora"], settings)
    return outcome, read_events(tmp_path / run / "events.jsonl")


def _image(pipe, prompt="a photo of sks dog"):
    return pipe(prompt, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images[0]


def test_lora_with_prior_preservation_trains_saves_and_reloads_in_diffusers(tmp_path, tiny_sd, photos):
    outcome, events = _train(tmp_path, tiny_sd, photos)
    assert outcome.status == "finished"
    kinds = [e.kind for e in events]
    assert kinds.index("class_images") < kinds.index("started") < kinds.index("step") < kinds.index("finished")
    steps = [e for e in events if e.kind == "step"]
    assert [s.step for s in steps] == [1, 2, 3, 4] and all(s.prior_loss > 0 and s.instance_loss > 0 for s in steps)
    previews = [e for e in events if e.kind == "preview"]
    assert [p.step for p in previews] == [0, 2, 4] and "a photo of a dog" in previews[0].prompts
    out = tmp_path / "run" / "output"
    base = StableDiffusionPipeline.from_pretrained(tiny_sd, safety_checker=None)
    before = _image(base)
    base.load_lora_weights(out)  # diffusers' own loader
    assert abs(_image(base) - before).max() > 1e-3
    kohya = load_file(str(next(out.glob("*kohya.safetensors"))))
    assert any(k.startswith("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down") for k in kohya)
    assert count_lora_layers(kohya) == count_lora_layers(load_file(str(out / "pytorch_lora_weights.safetensors"))) > 0
    card = (out / "README.md").read_text()
    assert "a photo of sks dog" in card and (out / "samples.png").exists()


def test_full_fine_tune_with_text_encoder_saves_a_diffusers_model(tmp_path, tiny_sd, photos):
    outcome, _ = _train(tmp_path, tiny_sd, photos, method="full", train_text_encoder=True, learning_rate=1e-3, max_steps=2,
                        save_single_file=True)
    assert outcome.status == "finished"
    single = StableDiffusionPipeline.from_single_file(tmp_path / "run" / "output" / "sks-dog.safetensors", config=str(tiny_sd),
                                                      local_files_only=True)
    assert _image(single).shape == (32, 32, 3)
    trained = StableDiffusionPipeline.from_pretrained(tmp_path / "run" / "output" / "model")
    base = StableDiffusionPipeline.from_pretrained(tiny_sd)
    changed = lambda a, b: any(not torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert changed(trained.unet, base.unet) and changed(trained.text_encoder, base.text_encoder)
    assert _image(trained).shape == (32, 32, 3)


def straight_and_resumed(tmp_path, tiny_sd, photos, settings: dict, stop_at: int):
    """The same run twice: straight through into a/, and stopped after step `stop_at` then resumed into b/."""
    straight = Studio(tmp_path / "home", base_model=str(tiny_sd))
    assert straight.train_folder(photos, tmp_path / "a", ["object-lora"], settings).status == "finished"
    commands = RunCommands()
    stop = lambda e: commands.stop() if e.kind == "step" and e.step == stop_at else None  # noqa: E731
    interrupted = Studio(tmp_path / "home", base_model=str(tiny_sd))
    first = interrupted.train_folder(photos, tmp_path / "b", ["object-lora"], settings, emit=stop, commands=commands)
    assert first.status == "cancelled" and first.step == stop_at
    assert interrupted.train_folder(photos, tmp_path / "b", resume=True).status == "finished"
    return tmp_path / "a", tmp_path / "b"


def test_resume_after_stop_ends_with_the_same_weights(tmp_path, tiny_sd, photos):
    settings = {"class_noun": "dog", "max_steps": 4, "preview_every": 3, "checkpoint_every": 2, "batch_size": 2,
                "snr_gamma": 5.0, "offset_noise": 0.1, "random_flip": True, **FAST}
    straight_and_resumed(tmp_path, tiny_sd, photos, settings, stop_at=2)

    a = load_file(str(tmp_path / "a" / "output" / "pytorch_lora_weights.safetensors"))
    b = load_file(str(tmp_path / "b" / "output" / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    resumed = [e for e in read_events(tmp_path / "b" / "events.jsonl") if e.kind == "started"]
    assert [s.resumed_from for s in resumed] == [0, 2]


def test_class_images_are_cached_reused_and_repaired(tmp_path, tiny_sd, photos):
    studio = Studio(tmp_path / "home", base_model=str(tiny_sd))
    settings = {"class_noun": "dog", "max_steps": 1, "preview_every": 5, **FAST, "num_class_images": 3}
    studio.train_folder(photos, tmp_path / "r1", ["object-lora"], settings)
    cached = sorted(studio.workspace.class_image_cache.rglob("0*.png"))
    assert len(cached) == 3
    original = cached[1].read_bytes()
    cached[0].unlink()  # deleted
    cached[1].write_bytes(original[: len(original) // 2])  # truncated
    studio.train_folder(photos, tmp_path / "r2", ["object-lora"], settings)
    progress = [e for e in read_events(tmp_path / "r2" / "events.jsonl") if e.kind == "class_images"]
    assert progress[0].reused == 1 and progress[-1].done == 3
    assert cached[1].read_bytes() == original  # same seed per image: the repaired file is the same picture
    studio.train_folder(photos, tmp_path / "r3", ["object-lora"], settings)
    again = [e for e in read_events(tmp_path / "r3" / "events.jsonl") if e.kind == "class_images"]
    assert again[0].reused == 3 and len(again) == 1


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_weights(tmp_path, tiny_sd, photos, monkeypatch):
    import studio.training.loop as loop

    real = loop.dreambooth_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        parts = real(*args, **kwargs)
        if calls["n"] > 2:  # two good steps, then NaN forever
            parts.total = parts.total * float("nan")
        return parts

    monkeypatch.setattr(loop, "dreambooth_loss", poisoned)
    outcome, events = _train(tmp_path, tiny_sd, photos, max_steps=10, max_bad_steps=3, preview_every=50)
    assert outcome.status == "failed"
    failed = events[-1]
    assert failed.kind == "failed" and "not finite for 3 steps" in failed.error and failed.advice
    checkpoint = tmp_path / "run" / "checkpoints" / "step-000002"
    weights = load_file(str(checkpoint / "trainable.safetensors"))
    assert weights and all(torch.isfinite(w).all() for w in weights.values())


def test_v_prediction_model_trains(tmp_path, tiny_sd_vpred, photos):
    outcome, events = _train(tmp_path, tiny_sd_vpred, photos, max_steps=2, snr_gamma=5.0, preview_every=5)
    assert outcome.status == "finished"
    assert all(torch.isfinite(torch.tensor(e.loss)) for e in events if e.kind == "step")


def test_sdxl_lora_trains_and_loads_in_diffusers(tmp_path, tiny_sdxl, photos):
    outcome, _ = _train(tmp_path, tiny_sdxl, photos, max_steps=2, preview_every=5, train_text_encoder=True)
    assert outcome.status == "finished"
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl)
    before = _image(pipe)
    pipe.load_lora_weights(tmp_path / "run" / "output")
    assert abs(_image(pipe) - before).max() > 1e-3


def test_full_disk_during_a_checkpoint_keeps_the_previous_one_and_reports(tmp_path, tiny_sd, photos, monkeypatch):
    import errno

    import studio.training.checkpoint as checkpoint

    real = checkpoint.save_file
    calls = {"n": 0}

    def disk_full_on_second(tensors, path, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            real(tensors, path, *a, **k)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, *a, **k)

    monkeypatch.setattr(checkpoint, "save_file", disk_full_on_second)
    outcome, events = _train(tmp_path, tiny_sd, photos, max_steps=6, checkpoint_every=2, preview_every=50)
    assert outcome.status == "failed" and "No space left" in events[-1].error and "resume" in events[-1].advice
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step-000002"]  # the half-written step-000004 was removed, step 2 survives
    weights = load_file(str(tmp_path / "run" / "checkpoints" / "step-000002" / "trainable.safetensors"))
    assert weights


def test_out_of_memory_mid_run_fails_cleanly_and_the_next_run_works(tmp_path, tiny_sd, photos, monkeypatch):
    import studio.training.loop as loop

    real = loop.dreambooth_loss
    calls = {"n": 0}

    def oom(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "dreambooth_loss", oom)
    outcome, events = _train(tmp_path, tiny_sd, photos, max_steps=5, preview_every=50)
    assert outcome.status == "failed" and events[-1].error.startswith("out of memory at step 2")
    assert "gradient checkpointing" in events[-1].advice
    monkeypatch.setattr(loop, "dreambooth_loss", real)
    again, _ = _train(tmp_path, tiny_sd, photos, run="run2", max_steps=1, preview_every=50)
    assert again.status == "finished"


def test_one_process_runs_bf16_with_checkpointing_then_fp32(tmp_path, tiny_sd, photos):
    """No process-wide precision state: a bf16 job followed by an fp32 job in the same studio both train."""
    studio = Studio(tmp_path / "home", base_model=str(tiny_sd))
    runs = []
    for name, extra in (("bf16", {"mixed_precision": "bf16", "gradient_checkpointing": True, "train_text_encoder": True}),
                        ("fp32", {"mixed_precision": "no"})):
        settings = {"class_noun": "dog", "max_steps": 2, "preview_every": 2, **FAST, **extra}
        runs.append(studio.train_folder(photos, tmp_path / name, ["object-lora"], settings))
        started = next(e for e in read_events(tmp_path / name / "events.jsonl") if e.kind == "started")
        assert started.precision == extra["mixed_precision"]
    assert [r.status for r in runs] == ["finished", "finished"]


def test_base_model_previews_are_drawn_once_and_reused(tmp_path, tiny_sd, photos):
    first, events = _train(tmp_path, tiny_sd, photos, max_steps=1, preview_every=1)
    second, again = _train(tmp_path, tiny_sd, photos, run="run2", max_steps=1, preview_every=1)
    step0 = [next(e for e in log if e.kind == "preview" and e.step == 0) for log in (events, again)]
    assert step0[0].images == step0[1].images and step0[0].prompts == step0[1].prompts
    for rel in step0[0].images:
        assert (tmp_path / "run" / rel).read_bytes() == (tmp_path / "run2" / rel).read_bytes()
    assert len(list((tmp_path / "home" / "cache" / "base-previews").iterdir())) == 1


def test_previews_keep_to_their_budget_and_the_last_step_is_always_drawn(tmp_path, tiny_sd, photos):
    # a preview here costs more than a training step, so a 1 % budget leaves room for none but the last step's
    _, events = _train(tmp_path, tiny_sd, photos, max_steps=6, preview_every=1, preview_budget=0.01)
    assert [e.step for e in events if e.kind == "preview"] == [0, 6]  # the untouched model's, and the last step's
    said = [e.message for e in events if e.kind == "notice" and "previews spaced out" in e.message]
    assert len(said) == 1 and "1%" in said[0] and "preview_budget = 1.0" in said[0]  # once, with what to change
    _, every = _train(tmp_path, tiny_sd, photos, run="run2", max_steps=6, preview_every=1, preview_budget=1.0)
    assert [e.step for e in every if e.kind == "preview"] == [0, 1, 2, 3, 4, 5, 6]


def test_the_preview_budget_weighs_previews_against_the_projected_run():
    from studio.config import TrainConfig
    from studio.training.previews import PreviewBudget

    config = TrainConfig(class_noun="dog", max_steps=100, preview_steps=20, preview_seeds=(0, 1), preview_budget=0.1)
    budget = PreviewBudget(config, batch_rows=2)
    for _ in range(10):
        budget.saw_step(0.1)  # 100 steps: 10 s of training
    # before any preview is measured, its cost is guessed from the step's: 2 prompts x 2 seeds x 20 steps x 2
    # forwards against 3 forwards' worth for each of 2 samples: ~27 steps' time
    assert 2.5 < budget.preview_cost() < 2.8 and not budget.allows()
    budget.saw_preview(0.3)  # measured (Sample now): cheap after all
    assert budget.preview_cost() == 0.3 and budget.allows()  # 0.3 + 2 x 0.3 <= 10 % of (10 + 0.9)
    budget.saw_preview(0.3)
    budget.saw_preview(0.3)
    assert not budget.allows()  # four previews would take 1.2 s of an 11.2 s run
    assert PreviewBudget(TrainConfig(class_noun="dog", max_steps=100, preview_budget=1.0), 2).allows()  # no limit
