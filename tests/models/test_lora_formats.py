"""LoRA files in both formats must reload, through diffusers' own loader, to the exact adapted model."""
from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from studio.models.families import FAMILIES
from studio.models.lora_formats import count_lora_layers, load_lora_for_inference, save_lora_files
from studio.models.sources import ModelLoadError
from tests.tiny import build_tiny_sd, build_tiny_sdxl

RANK = 4
CASES = {"sd": (build_tiny_sd, 8.0), "sdxl": (build_tiny_sdxl, 4.0)}  # alpha != rank on SD: the scale must survive


def _load(family, folder):
    extra = {} if family.name == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
    return family.pipeline_class().from_pretrained(folder, local_files_only=True, **extra)


def _generate(pipe):
    return pipe("a photo of sks dog", num_inference_steps=2, height=32, width=32, output_type="np",
                generator=torch.Generator().manual_seed(0)).images


def _encoders(pipe):
    return [e for e in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if e is not None]


@pytest.fixture(scope="module", params=sorted(CASES))
def trained(request, tmp_path_factory):
    """A tiny pipeline with non-zero LoRAs on UNet and text encoder(s), its outputs, and both saved files."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    build, alpha = CASES[request.param]
    family = FAMILIES[request.param]
    folder = build(tmp_path_factory.mktemp(f"tiny_{family.name}") / "model")
    pipe = _load(family, folder)
    base = _generate(pipe)
    torch.manual_seed(1)
    pipe.unet.add_adapter(LoraConfig(r=RANK, lora_alpha=alpha, init_lora_weights="gaussian",
                                     target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    for encoder in _encoders(pipe):
        encoder.add_adapter(LoraConfig(r=RANK, lora_alpha=alpha, init_lora_weights="gaussian",
                                       target_modules=["q_proj", "k_proj", "v_proj", "out_proj"]))
    with torch.no_grad():  # "gaussian" init leaves lora_B at zero: a no-op adapter would prove nothing
        for module in [pipe.unet, *_encoders(pipe)]:
            for name, param in module.named_parameters():
                if "lora_B" in name:
                    param.normal_(0.0, 0.5)
    adapted = _generate(pipe)
    out = tmp_path_factory.mktemp(f"lora_{family.name}")
    paths = save_lora_files(out, family, get_peft_model_state_dict(pipe.unet),
                            [get_peft_model_state_dict(e) for e in _encoders(pipe)], RANK, alpha,
                            {"base_model": "tiny-test", "trigger_words": ["sks", "dog"]})
    yield {"family": family, "folder": folder, "base": base, "adapted": adapted, "paths": paths, "alpha": alpha,
           "n_layers": sum(count_lora_layers(get_peft_model_state_dict(m)) for m in [pipe.unet, *_encoders(pipe)])}
    mp.undo()


def test_adapter_changes_the_output(trained):
    assert not torch.allclose(torch.from_numpy(trained["adapted"]), torch.from_numpy(trained["base"]), atol=1e-3)


@pytest.mark.parametrize("fmt", ["diffusers", "kohya"])
def test_saved_lora_reloads_to_the_adapted_model(trained, fmt):
    pipe = _load(trained["family"], trained["folder"])
    path = trained["paths"][fmt]
    pipe.load_lora_weights(str(path.parent) if fmt == "diffusers" else str(path))  # diffusers' own loader
    images = _generate(pipe)
    assert abs(images - trained["adapted"]).max() < 1e-4
    assert abs(images - trained["base"]).max() > 1e-3


def test_kohya_keys_metadata_and_layer_count(trained):
    kohya, diffusers = load_file(trained["paths"]["kohya"]), load_file(trained["paths"]["diffusers"])
    assert count_lora_layers(kohya) == count_lora_layers(diffusers) == trained["n_layers"]
    unet_key = "lora_unet_{}_attentions_0_transformer_blocks_0_attn1_to_q"
    block = "down_blocks_0" if trained["family"].name == "sd" else "down_blocks_1"
    assert unet_key.format(block) + ".lora_down.weight" in kohya
    assert unet_key.format(block) + ".lora_up.weight" in kohya
    te = ["lora_te_"] if trained["family"].name == "sd" else ["lora_te1_", "lora_te2_"]
    for prefix in te:
        assert f"{prefix}text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" in kohya
    assert {k.split("_text_model")[0] + "_" for k in kohya if k.startswith("lora_te")} == set(te)
    alphas = [v for k, v in kohya.items() if k.endswith(".alpha")]
    assert len(alphas) == trained["n_layers"] and all(float(a) == trained["alpha"] for a in alphas)
    with safe_open(trained["paths"]["kohya"], "pt") as fh:
        meta = fh.metadata()
    assert meta["ss_network_dim"] == str(RANK) and float(meta["ss_network_alpha"]) == trained["alpha"]
    assert meta["ss_sd_model_name"] == "tiny-test" and "sks" in meta["ss_tag_frequency"]


def test_load_lora_for_inference_and_its_errors(trained, tmp_path):
    pipe = _load(trained["family"], trained["folder"])
    load_lora_for_inference(pipe, trained["paths"]["kohya"], "mine")
    assert abs(_generate(pipe) - trained["adapted"]).max() < 1e-4
    data = trained["paths"]["kohya"].read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    save_file({"model.diffusion_model.x": torch.zeros(2)}, tmp_path / "ckpt.safetensors")
    save_file({"lora_unet_nowhere.lora_down.weight": torch.zeros(4, 8), "lora_unet_nowhere.lora_up.weight": torch.zeros(8, 4)},
              tmp_path / "alien.safetensors")
    for name, words in [("cut", "truncated"), ("ckpt", "full checkpoint"), ("alien", "does not fit")]:
        with pytest.raises(ModelLoadError, match=words):
            load_lora_for_inference(pipe, tmp_path / f"{name}.safetensors", "bad")
    assert abs(_generate(pipe) - trained["adapted"]).max() < 1e-4  # a refused file leaves the pipeline as it was
