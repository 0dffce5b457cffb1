"""The detail stage (studio/training/detail.py): the VAE decoder learns the subject's photos, other pictures keep
decoding as before, and only the decoder moves.

On the built-in model's real (pretrained, 64 px, ~0.6 M parameters) VAE: a random VAE reconstructs nothing, so it
could not show a reconstruction getting better or worse.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio.training.detail import measure_reconstruction, reconstruct, save_detail_vae, to_pixels, tune_decoder
from studio.world.render import BACKGROUNDS, COLOURS, POSITIONS, SIZES, Scene, render

ROOT = Path(__file__).resolve().parents[2]
BUILTIN_VAE = ROOT / "assets" / "builtin-model" / "vae"
DEMO = ROOT / "assets" / "demo-subject"
# "Does not get materially worse": class images may decode at most 15 % worse (measured: 5.82 -> 5.68 with the
# keep term, 5.82 -> 11.2 without it, on the textured subject below).
CLASS_TOLERANCE = 1.15


def builtin_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(BUILTIN_VAE)


def demo_photos() -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted(DEMO.glob("*.png"))]


def textured_photos(count: int = 3, size: int = 64) -> list[Image.Image]:
    """A subject whose fine detail (per-pixel noise) the world's decoder never learned: fitting it pulls the decoder
    hard, so without the keep term every other picture would change with it."""
    photos = []
    for i in range(count):
        pixels = (np.random.default_rng(i).random((size, size, 3)) * 80).astype("uint8")
        pixels[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = [(200, 40, 40), (40, 200, 40), (40, 40, 200)][i]
        photos.append(Image.fromarray(pixels))
    return photos


def class_stars(count: int = 4, seed: int = 0) -> list[Image.Image]:
    """Plain stars of every colour, on every background: the class the demo subject belongs to."""
    rng = random.Random(seed)
    return [render(Scene("star", rng.choice(list(COLOURS)), rng.choice(list(BACKGROUNDS)), rng.choice(SIZES),
                         rng.choice(POSITIONS)), 50_000 + 1000 * seed + i) for i in range(count)]


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_tuning_lowers_the_subjects_reconstruction_error():
    vae = builtin_vae()
    photos = demo_photos()
    report = tune_decoder(vae, photos, class_stars(), steps=30, learning_rate=1e-4, keep_weight=1.0, device="cpu")
    assert report.steps == report.planned_steps == 30 and not report.stopped
    # the cyan stripe, which no base-world picture has, is what the untouched decoder smooths away
    assert report.subject_mae_after < 0.9 * report.subject_mae_before, report
    assert report.subject_mae_after == pytest.approx(measure_reconstruction(vae, photos, "cpu"), rel=1e-5)
    assert report.seconds > 0
    # what a before/after view shows is the same round trip, to the rounding of 8-bit pixels
    shown = reconstruct(vae, photos, "cpu")
    assert [image.size for image in shown] == [photo.size for photo in photos]
    shown_mae = np.mean([np.abs(np.asarray(a, float) - np.asarray(b, float)).mean() for a, b in zip(shown, photos)])
    assert shown_mae == pytest.approx(report.subject_mae_after, abs=0.5)


def test_class_images_keep_decoding_as_before_and_would_not_without_the_keep_term():
    subject, classes = textured_photos(), class_stars()
    kept = tune_decoder(builtin_vae(), subject, classes, steps=60, learning_rate=3e-4, keep_weight=1.0, device="cpu")
    assert kept.subject_mae_after < kept.subject_mae_before, kept
    assert kept.class_mae_after <= CLASS_TOLERANCE * kept.class_mae_before, kept

    # The same run without the keep term wrecks the class: the tolerance above is one a broken keep term fails.
    free = tune_decoder(builtin_vae(), subject, classes, steps=60, learning_rate=3e-4, keep_weight=0.0, device="cpu")
    assert free.class_mae_before == pytest.approx(kept.class_mae_before)
    assert free.class_mae_after > CLASS_TOLERANCE * free.class_mae_before, free
    assert free.class_drift > 3 * kept.class_drift, (free, kept)


def test_only_the_decoder_moves_and_the_saved_folder_reproduces_it(tmp_path):
    from diffusers import AutoencoderKL

    vae = builtin_vae()
    encoder, quant, decoder = state(vae.encoder), state(vae.quant_conv), state(vae.decoder)
    vae.encoder.requires_grad_(False)
    flags = [p.requires_grad for p in vae.parameters()]
    tune_decoder(vae, demo_photos(), class_stars(2), steps=5, learning_rate=1e-4, device="cpu")
    assert all(torch.equal(v, vae.encoder.state_dict()[k]) for k, v in encoder.items())
    assert all(torch.equal(v, vae.quant_conv.state_dict()[k]) for k, v in quant.items())
    assert any(not torch.equal(v, vae.decoder.state_dict()[k]) for k, v in decoder.items())
    # handed back as it came (its gradient flags) and ready to draw with: eval mode, its own dtype
    assert [p.requires_grad for p in vae.parameters()] == flags
    assert not vae.decoder.training and vae.decoder.conv_out.weight.dtype == torch.float32

    folder = save_detail_vae(vae, tmp_path / "vae")
    assert any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin"))
    loaded = AutoencoderKL.from_pretrained(folder)
    pixels = to_pixels(demo_photos()[:2])
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.mean
        assert torch.equal(loaded.encode(pixels).latent_dist.mean, latents)
        assert torch.allclose(loaded.decode(latents).sample, vae.decode(latents).sample, atol=1e-6)


def test_stopping_ends_early_and_reports_the_steps_done():
    asked, seen = [], []

    def should_stop() -> bool:
        asked.append(True)
        return len(asked) > 3

    report = tune_decoder(builtin_vae(), demo_photos(), class_stars(2), steps=50, device="cpu",
                          should_stop=should_stop, progress=lambda done, planned, loss: seen.append((done, planned)))
    assert report.stopped and report.steps == 3 and report.planned_steps == 50
    assert seen == [(1, 50), (2, 50), (3, 50)]


def test_the_same_seed_tunes_the_same_decoder():
    a, b = builtin_vae(), builtin_vae()
    for vae in (a, b):
        tune_decoder(vae, demo_photos(), class_stars(3), steps=4, batch_size=1, learning_rate=1e-4, device="cpu", seed=7)
    assert all(torch.equal(v, b.decoder.state_dict()[k]) for k, v in a.decoder.state_dict().items())


def test_half_precision_frozen_parts_stay_half_and_the_decoder_returns_to_its_dtype():
    vae = builtin_vae().to(torch.bfloat16)
    encoder = state(vae.encoder)
    report = tune_decoder(vae, demo_photos()[:2], class_stars(2), steps=2, learning_rate=1e-4, device="cpu")
    assert report.steps == 2
    assert {p.dtype for p in vae.parameters()} == {torch.bfloat16}
    assert all(torch.equal(v, vae.encoder.state_dict()[k]) for k, v in encoder.items())


def test_refuses_what_it_cannot_train_on():
    with pytest.raises(ValueError, match="subject photo"):
        tune_decoder(builtin_vae(), [], class_stars(1), steps=1)
    with pytest.raises(ValueError, match="one size"):
        tune_decoder(builtin_vae(), [demo_photos()[0], demo_photos()[1].resize((32, 32))], steps=1)
    with pytest.raises(ValueError, match="detail loss"):
        tune_decoder(builtin_vae(), demo_photos(), steps=1, loss="huber")
