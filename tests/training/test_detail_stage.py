"""The detail stage in a run: after training, the VAE decoder is tuned on the subject's photos; the run's outputs
carry it (a LoRA's `vae/`, a full fine-tune's `model/vae`) and Generate draws with it.

(The decoder tuning itself is tested in test_detail.py.)"""
from __future__ import annotations

import shutil

import torch
from diffusers import AutoencoderKL

from studio.downloads import run_downloads
from studio.engine import Studio
from studio.events import read_events
from studio.inference.generate import DrawSettings
from studio.runs import RunFolder
from tests.conftest import FAST

SETTINGS = {"class_noun": "dog", "max_steps": 2, "preview_every": 0, "detail_stage": True, "detail_steps": 3,
            "detail_learning_rate": 1e-3, **FAST}


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_lora_run_with_the_detail_stage_exports_and_draws_with_its_vae(tmp_path, tiny_sd, photos):
    studio = Studio(tmp_path / "home", base_model=str(tiny_sd))
    assert studio.train_folder(photos, tmp_path / "run", ["object-lora"], SETTINGS).status == "finished"
    output = tmp_path / "run" / "output"
    tuned, base = AutoencoderKL.from_pretrained(str(output / "vae")), AutoencoderKL.from_pretrained(str(tiny_sd / "vae"))
    assert _same(tuned.encoder, base.encoder) and _same(tuned.quant_conv, base.quant_conv)  # latent space unchanged
    assert not _same(tuned.decoder, base.decoder)
    events = read_events(tmp_path / "run" / "events.jsonl")
    assert [e.detail for e in events if e.kind == "phase" and e.name == "detail"] == ["VAE decoder on 3 photos, 3 steps"]
    assert any(e.kind == "notice" and e.message.startswith("detail stage: the subject's photos") for e in events)
    assert "Detail stage" in (output / "README.md").read_text()
    labels = {d.name: d.label for d in run_downloads(RunFolder(tmp_path / "run"), "sks-dog")}
    assert "AutoencoderKL.from_pretrained" in labels["sks-dog-vae.zip"]

    settings = DrawSettings("a photo of sks dog", steps=2, seed=3)
    with_vae = studio.generate("local", str(tmp_path / "run"), settings).images[0]
    shutil.rmtree(output / "vae")  # the same run's weights, decoded by the base model's VAE
    without = studio.generate("local", str(tmp_path / "run"), settings).images[0]
    assert list(with_vae.getdata()) != list(without.getdata())
    base_picture = studio.generate("local", "base", settings).images[0]
    again = Studio(tmp_path / "home2", base_model=str(tiny_sd)).generate("local", "base", settings).images[0]
    assert list(base_picture.getdata()) == list(again.getdata())  # the shared base never took the tuned VAE


def test_a_full_run_keeps_its_tuned_decoder_inside_its_model(tmp_path, tiny_sd, photos):
    studio = Studio(tmp_path / "home", base_model=str(tiny_sd))
    settings = {**SETTINGS, "method": "full", "with_prior_preservation": False}
    assert studio.train_folder(photos, tmp_path / "run", ["object-full"], settings).status == "finished"
    output = tmp_path / "run" / "output"
    assert not (output / "vae").exists()
    tuned = AutoencoderKL.from_pretrained(str(output / "model" / "vae"))
    assert not _same(tuned.decoder, AutoencoderKL.from_pretrained(str(tiny_sd / "vae")).decoder)
    events = read_events(tmp_path / "run" / "events.jsonl")
    detail = [e.detail for e in events if e.kind == "phase" and e.name == "detail"]
    assert detail and "prior preservation is off" in detail[0]  # said: nothing held the other pictures in place
