"""Single-file export: the LDM-layout file must reload (diffusers' own loader) to the same model."""
from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open

from studio.models.families import load_components
from studio.models.single_file import export_single_file, unet_key_map, verify_single_file
from studio.models.sources import resolve_source
from tests.tiny import build_tiny_sd


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    root = tmp_path_factory.mktemp("single_file")
    yield {"eps": build_tiny_sd(root / "eps"), "v": build_tiny_sd(root / "v", prediction_type="v_prediction", seed=1),
           "root": root}
    mp.undo()


def _outputs(unet, vae, encoder):
    """UNet, VAE (encode + decode) and text-encoder outputs on fixed inputs."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.tensor([[encoder.config.bos_token_id, 5, 6, 7] + [encoder.config.eos_token_id] * 4])
    latents = torch.randn(1, 4, 16, 16, generator=gen)
    image = torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1
    with torch.no_grad():
        text = encoder(ids)[0]
        return [text, unet(latents, 10, encoder_hidden_states=text).sample,
                vae.encode(image).latent_dist.mean, vae.decode(latents).sample]


def test_round_trip_reproduces_unet_vae_and_text_encoder(tiny, tmp_path):
    comps = load_components(resolve_source(str(tiny["eps"])))
    with torch.no_grad():  # "fine-tuned": every part differs from the config folder, so none can come from there
        for module in (comps.denoiser, comps.vae, comps.text_encoders[0]):
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.01)
    path = export_single_file(comps, tmp_path / "out" / "model.safetensors")
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"]  # temp file gone
    with safe_open(path, "pt") as fh:
        keys = list(fh.keys())
    for prefix in ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model."):
        assert any(k.startswith(prefix) for k in keys), prefix
    assert "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight" in keys
    back = verify_single_file(path, tiny["eps"], reference=comps)
    for ours, theirs in zip(_outputs(comps.denoiser, comps.vae, comps.text_encoders[0]),
                            _outputs(back.unet, back.vae, back.text_encoder)):
        assert torch.allclose(ours, theirs, atol=1e-5)
    # and through the studio's own loader, as a user would pick the file as a base model
    again = load_components(resolve_source(str(path), config_dir=str(tiny["eps"])))
    assert torch.allclose(_outputs(again.denoiser, again.vae, again.text_encoders[0])[1],
                          _outputs(comps.denoiser, comps.vae, comps.text_encoders[0])[1], atol=1e-5)


def test_verify_catches_a_file_that_does_not_match(tiny, tmp_path):
    from studio.models.sources import ModelLoadError

    comps = load_components(resolve_source(str(tiny["eps"])))
    path = export_single_file(comps, tmp_path / "m.safetensors")
    with torch.no_grad():
        comps.vae.decoder.conv_out.bias.add_(1.0)  # the model moved on after the export
    with pytest.raises(ModelLoadError, match="first_stage_model.decoder.conv_out.bias differs"):
        verify_single_file(path, tiny["eps"], reference=comps)


def test_v_prediction_kept_when_loaded_with_config(tiny, tmp_path):
    from diffusers import StableDiffusionPipeline

    comps = load_components(resolve_source(str(tiny["v"])))
    assert comps.prediction_type == "v_prediction"
    path = export_single_file(comps, tmp_path / "v.safetensors")
    pipe = StableDiffusionPipeline.from_single_file(str(path), config=str(tiny["v"]), local_files_only=True)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert load_components(resolve_source(str(path), config_dir=str(tiny["v"]))).prediction_type == "v_prediction"


def test_sd2_text_encoder_exports_in_open_clip_layout(tiny, tmp_path):
    """SD 2.x uses OpenCLIP (gelu, fused q/k/v in LDM files); a tiny stand-in with gelu activations."""
    folder = tmp_path / "sd2"
    shutil.copytree(tiny["eps"], folder)
    config_file = folder / "text_encoder" / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "hidden_act": "gelu"}))
    comps = load_components(resolve_source(str(folder)))
    path = export_single_file(comps, tmp_path / "sd2.safetensors")
    with safe_open(path, "pt") as fh:
        keys = list(fh.keys())
    assert "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight" in keys
    assert not any(k.startswith("cond_stage_model.transformer.") for k in keys)
    verify_single_file(path, folder, reference=comps)


def test_key_map_follows_the_unet_config():
    """Not SD 1.5's numbers: 3 levels, 2 layers each; diffusers' own converter must invert our keys exactly."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    from studio.models.single_file import UNET_PREFIX, unet_to_ldm

    unet = UNet2DConditionModel(
        block_out_channels=(8, 16, 16), layers_per_block=2, sample_size=8, cross_attention_dim=8, norm_num_groups=4,
        attention_head_dim=2, down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    mapping = unet_key_map(unet)
    assert mapping["down_blocks.1.attentions.1"] == "input_blocks.5.1"
    assert mapping["down_blocks.1.downsamplers.0.conv"] == "input_blocks.6.0.op"
    assert mapping["up_blocks.1.upsamplers.0.conv"] == "output_blocks.5.2.conv"
    ldm = {UNET_PREFIX + k: v for k, v in unet_to_ldm(unet).items()}
    back = convert_ldm_unet_checkpoint(ldm, dict(unet.config))
    original = unet.state_dict()
    assert set(back) == set(original)
    assert all(torch.equal(back[k], original[k]) for k in original)


def test_sdxl_export_is_refused_clearly():
    fake_sdxl = SimpleNamespace(unet=None, vae=None, text_encoder=object(), text_encoder_2=object())
    with pytest.raises(NotImplementedError, match="SD 1.x/2.x only"):
        export_single_file(fake_sdxl, "/nonexistent/never-written.safetensors")


def test_unmerged_lora_is_refused(tiny):
    from peft import LoraConfig

    comps = load_components(resolve_source(str(tiny["eps"])))
    comps.denoiser.add_adapter(LoraConfig(r=2, target_modules=["to_q"]))
    with pytest.raises(ValueError, match="merge it first"):
        export_single_file(comps, tiny["root"] / "never.safetensors")
    assert not (tiny["root"] / "never.safetensors").exists()
