"""Each adapter type's files give the trained model's pictures in the loaders people use.

diffusers reads LoRA, LoCon and DoRA: its file must draw what the adapted model drew (same seed, max pixel
difference 1e-4 on [0, 1] images), and for LoRA and LoCon so must the kohya-layout file read by diffusers' own
loader. diffusers 0.42 drops a kohya file's `dora_scale` and reads no LoKr / LoHa for SD: those kohya / LyCORIS
files are read with A1111's / ComfyUI's formulas and must give the trained weights per layer (1e-5), and the
studio's own LoKr / LoHa file must draw what the adapted model drew.
"""
from __future__ import annotations

import copy

import pytest
import torch
from peft import get_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import safe_open
from safetensors.torch import load_file

from studio.config import TrainConfig
from studio.models.families import FAMILIES
from studio.models.lora_formats import count_lora_layers, inject_adapter_file, save_lora_files
from studio.training.trainable import adapter_config, conv_rank_alpha

SETTINGS = {  # alpha != rank everywhere, and LoCon's convolutions at another rank and alpha: every scale must survive
    "lora": {}, "dora": {}, "loha": {}, "locon": {"conv_rank": 2, "conv_alpha": 1.0},
    "lokr": {"lora_rank": 1},  # below half the factor size: PEFT splits w2 in two (lokr_w2_a @ lokr_w2_b)
}
TOLERANCE = 1e-4


def _pipe(folder, family=FAMILIES["sd"]):
    extra = {} if family.name == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
    return family.pipeline_class().from_pretrained(folder, local_files_only=True, **extra)


def _draw(pipe):
    return pipe("a photo of sks dog", num_inference_steps=2, height=32, width=32, output_type="np",
                generator=torch.Generator().manual_seed(0)).images


@pytest.fixture(scope="module")
def adapted(request, tmp_path_factory):
    """A tiny pipeline with a non-zero adapter of one type on its UNet and text encoder(s), its picture, and its
    saved files. "locon-sdxl": SDXL's first UNet block has convolutions and no attention (as the built-in model's)."""
    adapter, _, family_name = request.param.partition("-")
    family = FAMILIES[family_name or "sd"]
    model = request.getfixturevalue("tiny_sdxl" if family.name == "sdxl" else "tiny_sd")
    config = TrainConfig(adapter=adapter, **{"lora_rank": 4, "lora_alpha": 8.0, **SETTINGS[adapter]})
    pipe = _pipe(model, family)
    encoders = [e for e in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if e is not None]
    base = _draw(pipe)
    torch.manual_seed(1)
    pipe.unet.add_adapter(adapter_config(config, family.lora_targets, family.conv_targets))
    for encoder in encoders:
        encoder.add_adapter(adapter_config(config, family.text_lora_targets))
    with torch.no_grad():  # every factor random (the trained start has one at zero: a no-op would prove nothing)
        for module in (pipe.unet, *encoders):
            for name, param in module.named_parameters():
                if "magnitude" in name:
                    param.mul_(1.0 + 0.2 * torch.rand_like(param))
                elif any(k in name for k in ("lora_", "lokr_", "hada_")):
                    param.normal_(0.0, 0.3)
    image = _draw(pipe)
    folder = tmp_path_factory.mktemp(f"files_{request.param}")
    paths = save_lora_files(folder, family, get_peft_model_state_dict(pipe.unet),
                            [get_peft_model_state_dict(e) for e in encoders], config.lora_rank, config.lora_alpha,
                            {"output_name": "kohya"}, adapter=adapter,
                            conv=conv_rank_alpha(config) if adapter == "locon" else None)
    assert abs(image - base).max() > 1e-2  # the adapter really changes the picture
    return {"adapter": adapter, "family": family, "pipe": pipe, "image": image, "base": base, "paths": paths,
            "model": model}


@pytest.mark.parametrize("adapted", ["lora", "locon", "dora", "locon-sdxl"], indirect=True)
def test_diffusers_loads_its_file_to_the_adapted_model(adapted):
    pipe = _pipe(adapted["model"], adapted["family"])
    pipe.load_lora_weights(str(adapted["paths"]["diffusers"].parent))  # diffusers' own loader, its own file name
    assert abs(_draw(pipe) - adapted["image"]).max() < TOLERANCE


@pytest.mark.parametrize("adapted", ["lora", "locon", "locon-sdxl"], indirect=True)
def test_diffusers_loads_the_kohya_file_to_the_same_picture(adapted):
    images = {}
    for fmt in ("diffusers", "kohya"):
        pipe = _pipe(adapted["model"], adapted["family"])
        path = adapted["paths"][fmt]
        pipe.load_lora_weights(str(path.parent), weight_name=path.name)  # diffusers' own loader
        images[fmt] = _draw(pipe)
    assert abs(images["kohya"] - images["diffusers"]).max() < TOLERANCE
    assert abs(images["diffusers"] - adapted["image"]).max() < TOLERANCE


@pytest.mark.parametrize("adapted", ["lora", "locon", "dora", "lokr", "loha"], indirect=True)
def test_kohya_file_has_the_keys_a1111_and_comfyui_read(adapted):
    kohya = load_file(str(adapted["paths"]["kohya"]))
    layer = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    text = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    expected = {"lora": ["lora_down.weight", "lora_up.weight", "alpha"], "locon": ["lora_down.weight", "alpha"],
                "dora": ["lora_down.weight", "lora_up.weight", "dora_scale"], "lokr": ["lokr_w1", "lokr_w2_a", "lokr_w2_b", "alpha"],
                "loha": ["hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"]}[adapted["adapter"]]
    for name in (layer, text):
        assert all(f"{name}.{suffix}" in kohya for suffix in expected), sorted(k for k in kohya if k.startswith(name))
    conv = "lora_unet_down_blocks_0_resnets_0_conv1"
    if adapted["adapter"] == "locon":  # the convolutions, 4-D, at their own rank and alpha
        assert kohya[f"{conv}.lora_down.weight"].shape[:2] == (2, 16) and float(kohya[f"{conv}.alpha"]) == 1.0
        assert float(kohya[f"{layer}.alpha"]) == 8.0
    else:
        assert not any(k.startswith(conv) for k in kohya)
    if adapted["adapter"] == "dora":  # shaped like the weight's per-row norm, as A1111 and ComfyUI divide by it
        assert kohya[f"{layer}.dora_scale"].shape == (16, 1)
    with safe_open(str(adapted["paths"]["kohya"]), "pt") as fh:
        meta = fh.metadata()
    assert meta["ss_network_dim"] == str(SETTINGS[adapted["adapter"]].get("lora_rank", 4))
    n_layers = sum(count_lora_layers(get_peft_model_state_dict(m)) for m in (adapted["pipe"].unet, adapted["pipe"].text_encoder))
    assert count_lora_layers(kohya) == n_layers


@pytest.mark.parametrize("adapted", ["lokr", "loha"], indirect=True)
def test_studio_file_draws_lokr_and_loha_like_the_adapted_model(adapted):
    pipe = _pipe(adapted["model"], adapted["family"])
    inject_adapter_file(pipe.unet, [pipe.text_encoder], adapted["paths"]["diffusers"], "mine")
    assert abs(_draw(pipe) - adapted["image"]).max() < TOLERANCE


def _lycoris_delta(kohya: dict, name: str) -> torch.Tensor:
    """The weight change A1111 / ComfyUI compute from a LyCORIS layer (ComfyUI's comfy/weight_adapter formulas)."""
    def factor(w):
        return kohya[f"{name}.{w}"] if f"{name}.{w}" in kohya else kohya[f"{name}.{w}_a"] @ kohya[f"{name}.{w}_b"]

    if f"{name}.lokr_w1" in kohya or f"{name}.lokr_w1_a" in kohya:
        dims = [kohya[f"{name}.{w}_b"].shape[0] for w in ("lokr_w1", "lokr_w2") if f"{name}.{w}_b" in kohya]
        scale = float(kohya[f"{name}.alpha"]) / dims[-1] if dims and f"{name}.alpha" in kohya else 1.0
        return torch.kron(factor("lokr_w1"), factor("lokr_w2")) * scale
    scale = float(kohya[f"{name}.alpha"]) / kohya[f"{name}.hada_w1_b"].shape[0]
    return (kohya[f"{name}.hada_w1_a"] @ kohya[f"{name}.hada_w1_b"]) * (kohya[f"{name}.hada_w2_a"] @ kohya[f"{name}.hada_w2_b"]) * scale


def _dora_weight(kohya: dict, name: str, weight: torch.Tensor) -> torch.Tensor:
    """The weight A1111 / ComfyUI draw with from a kohya DoRA layer: (W + dW) * dora_scale / its row norm."""
    down, up = kohya[f"{name}.lora_down.weight"], kohya[f"{name}.lora_up.weight"]
    changed = weight + (up @ down) * float(kohya[f"{name}.alpha"]) / down.shape[0]
    return changed * (kohya[f"{name}.dora_scale"] / changed.norm(dim=1, keepdim=True))


@pytest.mark.parametrize("adapted", ["dora"], indirect=True)
def test_kohya_dora_file_gives_the_trained_weights(adapted):
    kohya = load_file(str(adapted["paths"]["kohya"]))
    checked = 0
    for prefix, module in (("lora_unet_", adapted["pipe"].unet), ("lora_te_text_model_", adapted["pipe"].text_encoder)):
        for path, layer in module.named_modules():
            if isinstance(layer, BaseTunerLayer):
                layer = copy.deepcopy(layer)  # merging changes the layer: do it on a copy
                original = layer.get_base_layer().weight.detach().clone()
                layer.merge(adapter_names=["default"])
                merged = layer.get_base_layer().weight.detach()
                assert torch.allclose(_dora_weight(kohya, prefix + path.replace(".", "_"), original), merged, atol=1e-5)
                checked += 1
    assert checked == count_lora_layers(kohya) > 0


@pytest.mark.parametrize("adapted", ["lokr", "loha"], indirect=True)
def test_lycoris_file_holds_the_trained_weight_change(adapted):
    kohya = load_file(str(adapted["paths"]["kohya"]))
    checked = 0
    for prefix, module in (("lora_unet_", adapted["pipe"].unet), ("lora_te_text_model_", adapted["pipe"].text_encoder)):
        for path, layer in module.named_modules():
            if isinstance(layer, BaseTunerLayer):
                name = prefix + path.replace(".", "_")
                expected = layer.get_delta_weight("default")
                assert torch.allclose(_lycoris_delta(kohya, name), expected, atol=1e-5), name
                checked += 1
    assert checked == count_lora_layers(kohya) > 0


@pytest.mark.parametrize("adapted", ["lokr"], indirect=True)
def test_a_lycoris_file_given_to_the_diffusers_loader_says_where_it_loads(adapted):
    from studio.models.lora_formats import load_lora_for_inference
    from studio.models.sources import ModelLoadError

    with pytest.raises(ModelLoadError, match="LoKr / LoHa .* use it in A1111 or ComfyUI"):
        load_lora_for_inference(_pipe(adapted["model"], adapted["family"]), adapted["paths"]["kohya"])
