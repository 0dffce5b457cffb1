"""The pretraining script end to end at toy size: it exports a folder diffusers loads, and --resume continues."""
from __future__ import annotations

import json
import sys

import torch


def _pretrain(monkeypatch, tmp_path, *extra: str) -> dict:
    from studio.world import pretrain

    argv = ["pretrain", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--images", "24",
            "--vae-steps", "2", "--vae-batch", "8", "--batch", "4", *extra]
    monkeypatch.setattr(sys, "argv", argv)
    threads = torch.get_num_threads()
    try:
        pretrain.main()
    finally:
        torch.set_num_threads(threads)  # main() sets 2 for itself; the suite runs on 1
    return json.loads((tmp_path / "out" / "pretrain_info.json").read_text())


def test_pretraining_exports_a_loadable_model_and_resumes(monkeypatch, tmp_path):
    from diffusers import StableDiffusionPipeline

    from studio.world.pretrain import LATENT_NOISE

    info = _pretrain(monkeypatch, tmp_path, "--steps", "2")
    assert (info["steps"], info["vae_steps"], info["images"]) == (2, 2, 24)
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "out")
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a photo of a red star", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)
    # the exported posterior's std is the fixed noise the decoder was trained with
    std = pipe.vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.std
    assert torch.allclose(std, torch.full_like(std, LATENT_NOISE), rtol=1e-4)
    assert (tmp_path / "out" / "tokenizer" / "vocab.json").exists() and (tmp_path / "out" / "tokenizer" / "merges.txt").exists()

    resumed = _pretrain(monkeypatch, tmp_path, "--steps", "3", "--resume")
    assert resumed["steps"] == 3 and resumed["wall_s"] > info["wall_s"]  # continued from step 2, time accumulated
