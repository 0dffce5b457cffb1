"""The tiny SD3 / FLUX.1 bases (studio/world/flow_bases.py) are real diffusers folders.

Memorisation tests train these through the studio, so what matters here is that
diffusers' own pipelines accept them unchanged, text and image inputs alike, and
that they are reproducible and carry the latent shift a trainer must not forget.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    FluxInpaintPipeline,
    FluxPipeline,
    StableDiffusion3InpaintPipeline,
    StableDiffusion3Pipeline,
)
from PIL import Image
from transformers import T5TokenizerFast

from studio.models.sources import BUILTIN_MODEL_DIR
from studio.world.flow_bases import T5_MAX_LENGTH, main, write_tiny_flux, write_tiny_sd3
from studio.world.tokenizer import tokenizer_words

PROMPT = "a photo of sks star"
FAMILIES = {  # family -> (writer, txt2img class, inpaint class, guidance scale, T5 tokenizer folder)
    "sd3": (write_tiny_sd3, StableDiffusion3Pipeline, StableDiffusion3InpaintPipeline, 1.0, "tokenizer_3"),
    "flux": (write_tiny_flux, FluxPipeline, FluxInpaintPipeline, 3.5, "tokenizer_2"),
}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict:
    return {family: spec[0](tmp_path_factory.mktemp(family)) for family, spec in FAMILIES.items()}


def _check_picture(image) -> None:
    assert isinstance(image, Image.Image) and image.size == (64, 64) and image.mode == "RGB"
    pixels = np.asarray(image, dtype=np.float32)
    assert np.isfinite(pixels).all() and pixels.std() > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_model_index_names_the_family(written, family):
    index = json.loads((written[family] / "model_index.json").read_text())
    assert index["_class_name"] == {"sd3": "StableDiffusion3Pipeline", "flux": "FluxPipeline"}[family]


@pytest.mark.parametrize("family", FAMILIES)
def test_txt2img(written, family):
    _, pipeline_class, _, guidance, _ = FAMILIES[family]
    pipe = pipeline_class.from_pretrained(written[family], local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(prompt=PROMPT, height=64, width=64, num_inference_steps=4, guidance_scale=guidance,
               max_sequence_length=T5_MAX_LENGTH, generator=torch.Generator().manual_seed(0), output_type="pil")
    _check_picture(out.images[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_inpaint(written, family):
    _, _, inpaint_class, guidance, _ = FAMILIES[family]
    pipe = inpaint_class.from_pretrained(written[family], local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    image = Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    out = pipe(prompt=PROMPT, image=image, mask_image=mask, height=64, width=64, num_inference_steps=4,
               strength=1.0, guidance_scale=guidance, max_sequence_length=T5_MAX_LENGTH,
               generator=torch.Generator().manual_seed(0), output_type="pil")
    _check_picture(out.images[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_t5_tokenizer_knows_the_world_words(written, family):
    tokenizer = T5TokenizerFast.from_pretrained(written[family] / FAMILIES[family][4])
    assert tokenizer.model_max_length == T5_MAX_LENGTH
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    words = tokenizer_words()
    ids = tokenizer(PROMPT).input_ids
    assert ids == [3 + words.index(w) for w in PROMPT.split()] + [tokenizer.eos_token_id]
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.convert_ids_to_tokens(ids)[-1] == "</s>"
    assert tokenizer.decode(ids, skip_special_tokens=True) == PROMPT
    # as the pipelines call it
    batch = tokenizer(PROMPT, padding="max_length", max_length=T5_MAX_LENGTH, truncation=True,
                      add_special_tokens=True, return_tensors="pt")
    assert batch.input_ids.shape == (1, T5_MAX_LENGTH) and batch.input_ids[0, len(ids):].eq(0).all()
    # a word the vocabulary lacks is spelt out, not lost
    assert tokenizer.unk_token_id not in tokenizer("A photo of qqzx, Star!").input_ids


@pytest.mark.parametrize("family", FAMILIES)
def test_vae_is_the_builtin_with_a_shift(written, family):
    vae = AutoencoderKL.from_pretrained(written[family] / "vae")
    builtin = AutoencoderKL.from_pretrained(BUILTIN_MODEL_DIR / "vae")
    assert vae.config.shift_factor and vae.config.shift_factor != 0
    assert vae.config.scaling_factor == builtin.config.scaling_factor
    assert "_name_or_path" not in json.loads((written[family] / "vae" / "config.json").read_text())
    # SD3's is widened to 16 channels (copies of the 4); it must still decode as the built-in does
    latents = torch.randn(1, builtin.config.latent_channels, 16, 16, generator=torch.Generator().manual_seed(0))
    copies = vae.config.latent_channels // builtin.config.latent_channels
    assert copies == {"sd3": 4, "flux": 1}[family]
    with torch.no_grad():
        expected = builtin.decode(latents).sample
        got = vae.decode(latents.repeat(1, copies, 1, 1)).sample
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_weights(written, family, tmp_path, capsys):
    main(["--family", family, "--out", str(tmp_path / "again")])
    assert capsys.readouterr().out.strip() == str(tmp_path / "again")
    name = "transformer/diffusion_pytorch_model.safetensors"
    assert (tmp_path / "again" / name).read_bytes() == (written[family] / name).read_bytes()
    FAMILIES[family][0](tmp_path / "other", seed=1)
    assert (tmp_path / "other" / name).read_bytes() != (written[family] / name).read_bytes()
