"""Write a trained LoRA in the two formats people use, and load one back for inference.

* diffusers: `pytorch_lora_weights.safetensors`, for `pipe.load_lora_weights(folder)`.
* kohya: one `.safetensors` with `lora_unet_*` / `lora_te_*` keys, `.alpha` per layer and `ss_*`
  metadata, the format A1111, ComfyUI, InvokeAI and model sites read.

Both files must give the same pictures as the in-memory adapted model, including when
alpha != rank (PEFT scales every update by alpha / rank).
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from studio.models.sources import ModelLoadError, safetensors_keys
from studio.runs import LORA_FILE as DIFFUSERS_LORA_NAME  # diffusers' own name for the file, as runs keep it
_DOWN_MARKERS = (".lora_A.", ".lora_down.", ".lora.down.", ".lora_linear_layer.down.")


def count_lora_layers(state_dict) -> int:
    """How many modules a LoRA adapts (one down-projection each), whatever the key format."""
    return sum(1 for key in state_dict if any(m in key for m in _DOWN_MARKERS) and key.endswith(".weight"))


def _scaled_for_diffusers(peft_sd: dict, scale: float) -> dict:
    """PEFT state dict -> diffusers layer names, with alpha/rank folded into lora_B.

    diffusers' `save_lora_weights` stores no alpha unless given adapter metadata (the family's
    `save_lora` passes none), and its loader then assumes alpha == rank. Folding the scale into
    the up-projection keeps `B @ A * alpha/r` exact for any loader.
    """
    from diffusers.utils import convert_state_dict_to_diffusers

    scaled = {k: (v * scale if ".lora_B." in k and scale != 1.0 else v).detach().cpu().contiguous()
              for k, v in peft_sd.items()}
    return convert_state_dict_to_diffusers(scaled)


def to_kohya(unet_peft_sd: dict, text_peft_sds: list[dict | None], alpha: float, family: str) -> dict:
    """PEFT state dicts -> kohya keys, via diffusers' `convert_state_dict_to_kohya`, fixed where it is wrong.

    Its defects in diffusers 0.42 that we correct: every `.alpha` is set to the rank (so a LoRA
    trained with alpha != rank loads at the wrong strength), SD 1.x text-encoder keys get SDXL's
    `lora_te1_` instead of `lora_te_`, and it expects `unet.`/`text_encoder.` prefixes PEFT does not
    write. CLIPTextModel lost its `text_model.` level in transformers 5.6; kohya names keep it.
    """
    from diffusers.utils import convert_state_dict_to_kohya

    merged = {f"unet.{k}": v for k, v in unet_peft_sd.items()}
    for i, sd in enumerate(text_peft_sds or []):
        if not sd:
            continue
        prefix = "text_encoder." if i == 0 else "text_encoder_2."
        merged.update({prefix + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in sd.items()})
    kohya = convert_state_dict_to_kohya({k: v.detach().cpu().contiguous() for k, v in merged.items()})
    out = {}
    for key, value in kohya.items():
        if family != "sdxl" and key.startswith("lora_te1_"):
            key = "lora_te_" + key[len("lora_te1_"):]
        if key.endswith(".alpha"):
            value = torch.tensor(float(alpha))
        out[key] = value
    return out


def kohya_metadata(family: str, rank: int, alpha: float, metadata: dict | None) -> dict[str, str]:
    """`ss_*` keys as kohya's sd-scripts writes them (what A1111's and civitai's readers show)."""
    meta = dict(metadata or {})
    triggers = meta.pop("trigger_words", None) or []
    if isinstance(triggers, str):
        triggers = [t.strip() for t in triggers.split(",") if t.strip()]
    out = {
        "ss_network_module": "networks.lora", "ss_network_dim": str(rank), "ss_network_alpha": str(alpha),
        "ss_base_model_version": "sdxl_base_v1-0" if family == "sdxl" else "sd_v1",
        "ss_sd_model_name": str(meta.pop("base_model", "unknown")),
        "ss_tag_frequency": json.dumps({"trigger": {t: 1 for t in triggers}}),
        "ss_training_comment": "trigger words: " + ", ".join(triggers) if triggers else "",
        "modelspec.trigger_phrase": ", ".join(triggers),
    }
    for key, value in meta.items():  # anything else the caller knows, kept under ss_ names
        name = key if key.startswith(("ss_", "modelspec.")) else f"ss_{key}"
        out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


def save_lora_files(folder, family, unet_peft_sd: dict, text_peft_sds: list[dict | None] | None,
                    rank: int, alpha: float, metadata: dict | None = None) -> dict[str, Path]:
    """Write both formats into `folder`; returns {"diffusers": path, "kohya": path}."""
    if not unet_peft_sd:
        raise ValueError("no UNet LoRA weights to save (empty state dict): was the adapter attached?")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # a user-typed name becomes a file name: no separators, so it cannot point outside `folder`
    name = re.sub(r"[^\w.-]", "_", str((metadata or {}).get("output_name") or "lora_kohya")).strip(".") or "lora_kohya"
    kohya_path = folder / f"{name}.safetensors"
    if kohya_path.name == DIFFUSERS_LORA_NAME:
        raise ValueError(f"output name {name!r} would overwrite the diffusers file")
    scale = float(alpha) / float(rank)
    text_peft_sds = list(text_peft_sds or [])
    family.save_lora(folder, _scaled_for_diffusers(unet_peft_sd, scale),
                     [_scaled_for_diffusers(sd, scale) if sd else None for sd in text_peft_sds])
    state = to_kohya(unet_peft_sd, text_peft_sds, alpha, family.name)
    fd, tmp = tempfile.mkstemp(prefix=name, suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=kohya_metadata(family.name, rank, alpha, metadata))
        os.replace(tmp, kohya_path)  # readers never see half a file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {"diffusers": folder / DIFFUSERS_LORA_NAME, "kohya": kohya_path}


def load_lora_for_inference(pipeline, path, adapter_name: str = "default"):
    """`pipeline.load_lora_weights`, with a damaged or wrong file reported as a ModelLoadError saying why."""
    path = Path(path)
    file = path / DIFFUSERS_LORA_NAME if path.is_dir() else path
    if not file.is_file():
        raise ModelLoadError(f"no LoRA file at {path}")
    if file.suffix.lower() != ".safetensors":
        raise ModelLoadError(f"{file.name}: LoRAs are loaded from .safetensors only (pickle files can run code)")
    keys = safetensors_keys(file)  # header check: truncated or garbage files stop here
    if count_lora_layers(dict.fromkeys(keys)) == 0:
        hint = " (it looks like a full checkpoint; load it as a base model)" if any(
            k.startswith("model.diffusion_model.") for k in keys) else ""
        raise ModelLoadError(f"{file.name} holds no LoRA weights{hint}")
    try:
        pipeline.load_lora_weights(str(file.parent), weight_name=file.name, adapter_name=adapter_name)
    except Exception as exc:  # diffusers/peft raise many types; mismatched architectures are the common case
        try:  # do not leave a half-injected adapter behind in a pipeline that keeps serving
            pipeline.delete_adapters(adapter_name)
        except Exception:
            pass
        raise ModelLoadError(f"{file.name} does not fit this base model ({type(exc).__name__}: {str(exc)[:300]}); "
                             "was it trained on another model family?") from exc
    return pipeline
