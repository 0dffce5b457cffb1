"""Export a fine-tuned SD 1.x/2.x model as ONE original-LDM-layout .safetensors.

A1111, ComfyUI and most model sites expect the CompVis key layout
(`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.*`), not
diffusers folders. This is the inverse of diffusers' single-file conversion.
The mapping is derived from the model's own blocks (how many resnets each block
really has), so any UNet config converts, not only SD 1.5's shape.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from studio.models.sources import ModelLoadError

UNET_PREFIX, VAE_PREFIX = "model.diffusion_model.", "first_stage_model."
CLIP_PREFIX, OPENCLIP_PREFIX = "cond_stage_model.transformer.", "cond_stage_model.model."

_UNET_FIXED = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
               "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
               "class_embedding.linear_1": "label_emb.0.0", "class_embedding.linear_2": "label_emb.0.2",
               "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
                "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _parts(comps_or_pipeline):
    """(unet, vae, text encoders, family name) from a studio `Components` or a diffusers pipeline."""
    if hasattr(comps_or_pipeline, "text_encoders"):
        encoders = comps_or_pipeline.text_encoders
        return comps_or_pipeline.denoiser, comps_or_pipeline.vae, encoders, getattr(comps_or_pipeline.family, "name", "sd")
    pipe = comps_or_pipeline
    encoders = [e for e in (getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)) if e is not None]
    return pipe.unet, pipe.vae, encoders, "sdxl" if len(encoders) > 1 else "sd"


def unet_key_map(unet) -> dict[str, str]:
    """diffusers module prefix -> LDM module prefix, walking the real blocks (LDM numbers them flat)."""
    mapping = dict(_UNET_FIXED)
    index = 1  # input_blocks.0 is conv_in
    for b, block in enumerate(unet.down_blocks):
        for j in range(len(block.resnets)):
            mapping[f"down_blocks.{b}.resnets.{j}"] = f"input_blocks.{index}.0"
            if getattr(block, "attentions", None) is not None:
                mapping[f"down_blocks.{b}.attentions.{j}"] = f"input_blocks.{index}.1"
            index += 1
        if block.downsamplers is not None:  # its own LDM entry, the `op` conv
            mapping[f"down_blocks.{b}.downsamplers.0.conv"] = f"input_blocks.{index}.0.op"
            index += 1
    mid = unet.mid_block
    if mid is not None:
        mapping["mid_block.resnets.0"] = "middle_block.0"
        for j in range(len(getattr(mid, "attentions", []) or [])):
            mapping[f"mid_block.attentions.{j}"] = f"middle_block.{2 * j + 1}"
            mapping[f"mid_block.resnets.{j + 1}"] = f"middle_block.{2 * j + 2}"
    index = 0
    for b, block in enumerate(unet.up_blocks):
        has_attn = getattr(block, "attentions", None) is not None
        for j in range(len(block.resnets)):
            mapping[f"up_blocks.{b}.resnets.{j}"] = f"output_blocks.{index}.0"
            if has_attn:
                mapping[f"up_blocks.{b}.attentions.{j}"] = f"output_blocks.{index}.1"
            index += 1
        if block.upsamplers is not None:  # sits after the last resnet (and attention) of the block
            mapping[f"up_blocks.{b}.upsamplers.0.conv"] = f"output_blocks.{index - 1}.{2 if has_attn else 1}.conv"
    return mapping


def _convert(state: dict, prefixes: dict[str, str], what: str) -> dict[str, torch.Tensor]:
    """Rename keys by their longest matching module prefix; a key left over means the mapping is wrong."""
    order = sorted(prefixes, key=len, reverse=True)
    out = {}
    for key, value in state.items():
        if ".base_layer." in key or ".lora_" in key:  # PEFT wrappers would be written under nonsense names
            raise ValueError(f"{what} still carries a LoRA adapter ({key}); merge it first: pipe.fuse_lora(), "
                             "then pipe.unload_lora_weights()")
        src = next((p for p in order if key.startswith(p + ".")), None)
        if src is None:
            raise NotImplementedError(f"{what}: no LDM name for {key!r}; this architecture is not supported for export")
        rest = key[len(src) + 1:]
        if what == "unet" and "resnets." in src:  # VAE resnets keep their names (norm1, conv1, ...)
            head, _, tail = rest.partition(".")
            rest = f"{_UNET_RESNET.get(head, head)}.{tail}"
        out[prefixes[src] + "." + rest] = value
    return out


def unet_to_ldm(unet) -> dict[str, torch.Tensor]:
    return _convert(unet.state_dict(), unet_key_map(unet), "unet")


def vae_to_ldm(vae) -> dict[str, torch.Tensor]:
    prefixes = {"quant_conv": "quant_conv", "post_quant_conv": "post_quant_conv"}
    for part in ("encoder", "decoder"):
        coder = getattr(vae, part)
        for name in ("conv_in", "conv_out"):
            prefixes[f"{part}.{name}"] = f"{part}.{name}"
        prefixes[f"{part}.conv_norm_out"] = f"{part}.norm_out"
        for j in range(len(coder.mid_block.resnets)):
            prefixes[f"{part}.mid_block.resnets.{j}"] = f"{part}.mid.block_{j + 1}"
        blocks = coder.down_blocks if part == "encoder" else coder.up_blocks
        for i, block in enumerate(blocks):
            # LDM numbers decoder levels from the lowest resolution up; diffusers in call order.
            level = i if part == "encoder" else len(blocks) - 1 - i
            word = "down" if part == "encoder" else "up"
            for j in range(len(block.resnets)):
                prefixes[f"{part}.{word}_blocks.{i}.resnets.{j}"] = f"{part}.{word}.{level}.block.{j}"
            samplers = block.downsamplers if part == "encoder" else block.upsamplers
            if samplers is not None:
                prefixes[f"{part}.{word}_blocks.{i}.{word}samplers.0.conv"] = f"{part}.{word}.{level}.{word}sample.conv"
        for name, ldm in _VAE_ATTN.items():
            prefixes[f"{part}.mid_block.attentions.0.{name}"] = f"{part}.mid.attn_1.{ldm}"
    out = {}
    for key, value in _convert(vae.state_dict(), prefixes, "vae").items():
        key = key.replace(".conv_shortcut.", ".nin_shortcut.")
        if ".mid.attn_1." in key and key.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]  # LDM's VAE attention uses 1x1 convs, not linears
        out[key] = value
    return out


def text_encoder_to_ldm(encoder) -> dict[str, torch.Tensor]:
    state = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in encoder.state_dict().items()
             if not k.endswith("position_ids")}  # transformers >=5.6 flattened CLIPTextModel; LDM keeps text_model.
    if getattr(encoder.config, "hidden_act", "quick_gelu") == "quick_gelu":  # OpenAI CLIP: SD 1.x
        return {CLIP_PREFIX + k: v for k, v in state.items()}
    return _openclip(state)  # SD 2.x: OpenCLIP ViT-H layout, q/k/v fused


def _openclip(state: dict) -> dict[str, torch.Tensor]:
    out = {}
    renames = [("text_model.encoder.layers.", "transformer.resblocks."), (".layer_norm1.", ".ln_1."),
               (".layer_norm2.", ".ln_2."), (".mlp.fc1.", ".mlp.c_fc."), (".mlp.fc2.", ".mlp.c_proj."),
               (".self_attn.out_proj.", ".attn.out_proj.")]
    fixed = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
             "text_model.embeddings.position_embedding.weight": "positional_embedding",
             "text_model.final_layer_norm.weight": "ln_final.weight", "text_model.final_layer_norm.bias": "ln_final.bias"}
    for key, value in state.items():
        if key in fixed:
            out[OPENCLIP_PREFIX + fixed[key]] = value
        elif ".self_attn.q_proj." in key:
            base, kind = key.split(".self_attn.q_proj.")
            qkv = [state[f"{base}.self_attn.{p}_proj.{kind}"] for p in "qkv"]
            new = base.replace("text_model.encoder.layers.", "transformer.resblocks.")
            out[f"{OPENCLIP_PREFIX}{new}.attn.in_proj_{kind}"] = torch.cat(qkv, 0)
        elif ".self_attn.k_proj." in key or ".self_attn.v_proj." in key:
            continue
        else:
            for old, new in renames:
                key = key.replace(old, new)
            out[OPENCLIP_PREFIX + key] = value
    return out


def ldm_state_dict(comps_or_pipeline) -> dict[str, torch.Tensor]:
    """The whole model under LDM names, fp32 on the CPU."""
    unet, vae, encoders, family = _parts(comps_or_pipeline)
    if family == "sdxl" or len(encoders) != 1:
        raise NotImplementedError("single-file export supports SD 1.x/2.x only; for SDXL, share the diffusers "
                                  "folder or the LoRA file instead")
    state = {UNET_PREFIX + k: v for k, v in unet_to_ldm(unet).items()}
    state.update({VAE_PREFIX + k: v for k, v in vae_to_ldm(vae).items()})
    state.update(text_encoder_to_ldm(encoders[0]))
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}


def export_single_file(comps_or_pipeline, path, metadata: dict[str, str] | None = None) -> Path:
    """Write UNet + VAE + text encoder as one LDM-layout .safetensors, atomically (a crash leaves no half file)."""
    state = ldm_state_dict(comps_or_pipeline)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": "pt", **(metadata or {})})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def verify_single_file(path, config_dir, reference=None, atol: float = 1e-6):
    """Reload `path` with diffusers' own single-file loader and check every weight survived; returns the pipeline.

    The reloaded model, mapped back to LDM names, must match the file key for key (nothing dropped or
    left at its init); with `reference` (the exported Components or pipeline) it must match that too.
    """
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    try:
        pipe = StableDiffusionPipeline.from_single_file(str(path), config=str(config_dir), local_files_only=True,
                                                        safety_checker=None, requires_safety_checker=False)
    except Exception as exc:
        raise ModelLoadError(f"exported file {path} does not reload: {type(exc).__name__}: {exc}") from exc
    back = ldm_state_dict(pipe)
    for label, expected in [("the file", load_file(str(path)))] + (
            [("the exported model", ldm_state_dict(reference))] if reference is not None else []):
        if set(expected) != set(back):
            odd = sorted(set(expected) ^ set(back))[:3]
            raise ModelLoadError(f"{path}: reloaded model and {label} have different weights, e.g. {odd}")
        for key, value in expected.items():
            if not torch.allclose(value, back[key], atol=atol):
                raise ModelLoadError(f"{path}: {key} differs between the reloaded model and {label}")
    return pipe
