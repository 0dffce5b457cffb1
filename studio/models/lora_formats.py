"""Write a trained adapter in the two formats people use, and load one back for inference.

* diffusers: `pytorch_lora_weights.safetensors`, for `pipe.load_lora_weights(folder)` (LoRA, LoCon, DoRA).
  LoKr / LoHa, which that loader cannot read, keep their PEFT weights under the same name for the studio.
* kohya / LyCORIS: one `.safetensors` with `lora_unet_*` / `lora_te_*` keys (`lora_down`/`lora_up`, conv
  layers included, `dora_scale`, `lokr_w1`/`lokr_w2`, `hada_*`), `.alpha` per layer and `ss_*` metadata,
  the format A1111, ComfyUI, InvokeAI and model sites read.

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
LYCORIS = ("lokr", "loha")  # peft's LyCORIS types, which diffusers' load_lora_weights cannot read
STUDIO_ADAPTER_KEY = "studio_adapter"  # metadata of the studio's LoKr / LoHa file: the peft config to rebuild
_DOWN_MARKERS = (".lora_A.", ".lora_down.", ".lora.down.", ".lora_linear_layer.down.")


def count_lora_layers(state_dict) -> int:
    """How many modules a LoRA adapts (one down-projection each), whatever the key format."""
    lora = sum(1 for key in state_dict if any(m in key for m in _DOWN_MARKERS) and key.endswith(".weight"))
    return lora + sum(1 for key in state_dict if key.endswith((".lokr_w1", ".lokr_w1_a", ".hada_w1_a")))


def _layer_alpha(down: torch.Tensor, alpha: float, conv_alpha: float | None) -> float:
    """LoCon trains the convolutions (4-D weights) at their own alpha; everything else at `alpha`."""
    return float(conv_alpha) if conv_alpha and down.ndim == 4 else float(alpha)


def _scaled_for_diffusers(peft_sd: dict, alpha: float, conv_alpha: float | None = None) -> dict:
    """PEFT state dict -> diffusers layer names, with each layer's alpha/rank folded into lora_B.

    diffusers' `save_lora_weights` stores no alpha unless given adapter metadata (the family's
    `save_lora` passes none), and its loader then assumes alpha == rank. Folding the scale into
    the up-projection keeps `B @ A * alpha/r` exact for any loader (DoRA too: its norm is taken
    of the same `W + B @ A * alpha/r`).
    """
    from diffusers.utils import convert_state_dict_to_diffusers

    scaled = {}
    for key, value in peft_sd.items():
        if ".lora_B." in key:
            down = peft_sd[key.replace(".lora_B.", ".lora_A.")]
            scale = _layer_alpha(down, alpha, conv_alpha) / down.shape[0]
            value = value * scale if scale != 1.0 else value
        scaled[key] = value.detach().cpu().contiguous()
    converted = convert_state_dict_to_diffusers(scaled)
    if any(".lora_A." in k for k in converted):
        # It renames linear layers only, leaving LoCon's convolutions in PEFT names, and diffusers' loader picks
        # the format of the whole file from its first key: a mixed file loads the convolutions and silently
        # drops the attention (or the reverse). Every key in PEFT's names loads whole.
        return scaled
    return converted


def _text_dora_named(layers: dict) -> dict:
    """Text encoders are loaded by transformers, which looks for DoRA's magnitude as `lora_magnitude_vector.weight`:
    under the bare name diffusers writes, it drops it (a "MISSING"/"UNEXPECTED" report) and draws a different model."""
    return {(k + ".weight" if k.endswith(".lora_magnitude_vector") else k): v for k, v in layers.items()}


def _merged(unet_peft_sd: dict, text_peft_sds: list[dict | None] | None) -> dict:
    """One dict with the `unet.`/`text_encoder.` prefixes diffusers' kohya converter expects (PEFT writes none).
    CLIPTextModel lost its `text_model.` level in transformers 5.6; kohya names keep it."""
    merged = {f"unet.{k}": v for k, v in unet_peft_sd.items()}
    for i, sd in enumerate(text_peft_sds or []):
        if not sd:
            continue
        prefix = "text_encoder." if i == 0 else "text_encoder_2."
        merged.update({prefix + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in sd.items()})
    return merged


def _kohya_layer_names(layers: list[str], family: str) -> dict[str, str]:
    """Prefixed PEFT layer names -> kohya module names (`lora_unet_down_blocks_0_..._to_q`), by diffusers' converter."""
    from diffusers.utils import convert_state_dict_to_kohya

    probe = {f"{layer}.lora_A.weight": torch.tensor([i]) for i, layer in enumerate(layers)}
    names = {}
    for key, value in convert_state_dict_to_kohya(probe).items():
        if key.endswith(".lora_down.weight"):
            name = key[: -len(".lora_down.weight")]
            if family != "sdxl" and name.startswith("lora_te1_"):  # SD 1.x text keys are lora_te_, not SDXL's lora_te1_
                name = "lora_te_" + name[len("lora_te1_"):]
            names[layers[int(value[0])]] = name
    return names


def to_kohya(unet_peft_sd: dict, text_peft_sds: list[dict | None], alpha: float, family: str,
             conv_alpha: float | None = None) -> dict:
    """LoRA / LoCon / DoRA PEFT state dicts -> kohya keys (`lora_down`, `lora_up`, `.alpha`, `dora_scale`).

    diffusers' `convert_state_dict_to_kohya` (0.42) sets every `.alpha` to the rank (a LoRA trained with
    alpha != rank would load at the wrong strength), gives SD 1.x text keys SDXL's `lora_te1_` and garbles
    DoRA's magnitude keys, so the names come from it and everything else from here. `dora_scale` has the
    weight's rank (out, 1[, 1, 1]): A1111 and ComfyUI divide it by the weight's per-row norm of that shape.
    """
    merged = {k: v.detach().cpu().contiguous() for k, v in _merged(unet_peft_sd, text_peft_sds).items()}
    downs = {k[: -len(".lora_A.weight")]: v for k, v in merged.items() if k.endswith(".lora_A.weight")}
    names = _kohya_layer_names(list(downs), family)
    out = {}
    for layer, down in downs.items():
        name = names[layer]
        out[f"{name}.lora_down.weight"] = down
        out[f"{name}.lora_up.weight"] = merged[f"{layer}.lora_B.weight"]
        out[f"{name}.alpha"] = torch.tensor(_layer_alpha(down, alpha, conv_alpha))
        magnitude = merged.get(f"{layer}.lora_magnitude_vector")
        if magnitude is not None:
            out[f"{name}.dora_scale"] = magnitude.reshape(-1, *[1] * (down.ndim - 1))
    return out


def to_lycoris(unet_peft_sd: dict, text_peft_sds: list[dict | None], adapter: str, rank: int, alpha: float,
               family: str) -> dict:
    """LoKr / LoHa PEFT state dicts -> the LyCORIS keys A1111 and ComfyUI read (`lokr_w1`, `hada_w1_a`, ...).

    PEFT and LyCORIS share the tensor names and the product (kron(w1, w2), or (w1_a w1_b) * (w2_a w2_b)), times
    alpha / r. LyCORIS ignores alpha for a LoKr whose factors are both full, so LoKr's scale is folded into w1
    and `.alpha` (when written) equals the inner dimension: the file loads at the trained strength either way.
    """
    merged = {k: v.detach().cpu().contiguous() for k, v in _merged(unet_peft_sd, text_peft_sds).items()}
    prefix = "lokr_" if adapter == "lokr" else "hada_"
    layers = sorted({k.split("." + prefix)[0] for k in merged if "." + prefix in k})
    names = _kohya_layer_names(layers, family)
    out = {}
    for layer in layers:
        name = names[layer]
        tensors = {k[len(layer) + 1:]: v for k, v in merged.items() if k.startswith(layer + "." + prefix)}
        if adapter == "lokr":
            w1 = "lokr_w1" if "lokr_w1" in tensors else "lokr_w1_a"
            tensors[w1] = tensors[w1] * (float(alpha) / rank)  # PEFT's scale: alpha / r, one r for every layer
            inner = tensors.get("lokr_w2_b", tensors.get("lokr_w1_b"))
            if inner is not None:
                out[f"{name}.alpha"] = torch.tensor(float(inner.shape[0]))
        else:
            out[f"{name}.alpha"] = torch.tensor(float(alpha))
        out.update({f"{name}.{k}": v for k, v in tensors.items()})
    return out


def kohya_metadata(family: str, rank: int, alpha: float, metadata: dict | None, adapter: str = "lora",
                   conv: tuple[int, float] | None = None) -> dict[str, str]:
    """`ss_*` keys as kohya's sd-scripts / LyCORIS write them (what A1111's and civitai's readers show)."""
    meta = dict(metadata or {})
    triggers = meta.pop("trigger_words", None) or []
    if isinstance(triggers, str):
        triggers = [t.strip() for t in triggers.split(",") if t.strip()]
    network_args = {"lora": {}, "locon": {"conv_dim": str(conv[0]), "conv_alpha": str(conv[1])} if conv else {},
                    "dora": {"algo": "lora", "dora_wd": "True"}, "lokr": {"algo": "lokr"}, "loha": {"algo": "loha"}}[adapter]
    out = {
        "ss_network_module": "lycoris.kohya" if adapter in ("dora", "lokr", "loha") else "networks.lora",
        "ss_network_dim": str(rank), "ss_network_alpha": str(alpha),
        "ss_base_model_version": "sdxl_base_v1-0" if family == "sdxl" else "sd_v1",
        "ss_sd_model_name": str(meta.pop("base_model", "unknown")),
        "ss_tag_frequency": json.dumps({"trigger": {t: 1 for t in triggers}}),
        "ss_training_comment": "trigger words: " + ", ".join(triggers) if triggers else "",
        "modelspec.trigger_phrase": ", ".join(triggers),
    }
    if network_args:
        out["ss_network_args"] = json.dumps(network_args)
    for key, value in meta.items():  # anything else the caller knows, kept under ss_ names
        name = key if key.startswith(("ss_", "modelspec.")) else f"ss_{key}"
        out[name] = value if isinstance(value, str) else json.dumps(value)
    return out


def save_lora_files(folder, family, unet_peft_sd: dict, text_peft_sds: list[dict | None] | None,
                    rank: int, alpha: float, metadata: dict | None = None, *, adapter: str = "lora",
                    conv: tuple[int, float] | None = None) -> dict[str, Path]:
    """Write both formats into `folder`; returns {"diffusers": path, "kohya": path}.

    For LoKr / LoHa, which diffusers' `load_lora_weights` cannot read, the file under the diffusers name holds
    the PEFT weights and their config instead (`unet.` / `text_encoder_<i>.` keys, `studio_adapter` metadata):
    the studio's own drawing loads it with `inject_adapter_file`. `conv`: LoCon's (conv rank, conv alpha).
    """
    if not unet_peft_sd:
        raise ValueError("no UNet LoRA weights to save (empty state dict): was the adapter attached?")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # a user-typed name becomes a file name: no separators, so it cannot point outside `folder`
    name = re.sub(r"[^\w.-]", "_", str((metadata or {}).get("output_name") or "lora_kohya")).strip(".") or "lora_kohya"
    kohya_path = folder / f"{name}.safetensors"
    if kohya_path.name == DIFFUSERS_LORA_NAME:
        raise ValueError(f"output name {name!r} would overwrite the diffusers file")
    text_peft_sds = list(text_peft_sds or [])
    conv_alpha = conv[1] if conv else None
    if adapter in LYCORIS:
        _atomic_save(_studio_adapter_state(unet_peft_sd, text_peft_sds), folder / DIFFUSERS_LORA_NAME,
                     {STUDIO_ADAPTER_KEY: json.dumps({"type": adapter, "r": rank, "alpha": float(alpha),
                                                      "unet_targets": list(family.lora_targets),
                                                      "text_targets": list(family.text_lora_targets)})})
        state = to_lycoris(unet_peft_sd, text_peft_sds, adapter, rank, alpha, family.name)
    else:
        family.save_lora(folder, _scaled_for_diffusers(unet_peft_sd, alpha, conv_alpha),
                         [_text_dora_named(_scaled_for_diffusers(sd, alpha, conv_alpha)) if sd else None
                          for sd in text_peft_sds])
        if not family.kohya_format:  # SD3 / FLUX: ComfyUI and diffusers both read diffusers' file
            return {"diffusers": folder / DIFFUSERS_LORA_NAME}
        state = to_kohya(unet_peft_sd, text_peft_sds, alpha, family.name, conv_alpha)
    _atomic_save(state, kohya_path, kohya_metadata(family.name, rank, alpha, metadata, adapter, conv))
    return {"diffusers": folder / DIFFUSERS_LORA_NAME, "kohya": kohya_path}


def _atomic_save(state: dict, path: Path, metadata: dict[str, str]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=metadata)
        os.replace(tmp, path)  # readers never see half a file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# -- the studio's own file for LoKr / LoHa ---------------------------------------------------------------

def _studio_adapter_state(unet_peft_sd: dict, text_peft_sds: list[dict | None]) -> dict:
    state = {f"unet.{k}": v.detach().cpu().contiguous() for k, v in unet_peft_sd.items()}
    for i, sd in enumerate(text_peft_sds):
        state.update({f"text_encoder_{i}.{k}": v.detach().cpu().contiguous() for k, v in (sd or {}).items()})
    return state


def studio_adapter_spec(file) -> dict | None:
    """The adapter a file written by `save_lora_files` for LoKr / LoHa holds; None for a diffusers/kohya LoRA."""
    from safetensors import safe_open

    with safe_open(str(file), "pt") as fh:
        spec = (fh.metadata() or {}).get(STUDIO_ADAPTER_KEY)
    return json.loads(spec) if spec else None


def inject_adapter_file(unet, text_encoders, file, adapter_name: str = "default") -> None:
    """Attach a LoKr / LoHa from the studio's file to a UNet (and text encoders), through peft, weights loaded."""
    from peft import LoHaConfig, LoKrConfig, set_peft_model_state_dict
    from safetensors.torch import load_file

    spec = studio_adapter_spec(file)
    if not spec or spec.get("type") not in LYCORIS:
        raise ModelLoadError(f"{Path(file).name} holds no LoKr / LoHa adapter")
    config_class = LoKrConfig if spec["type"] == "lokr" else LoHaConfig
    state = load_file(str(file))
    parts = [("unet.", unet, spec["unet_targets"])] + [
        (f"text_encoder_{i}.", te, spec["text_targets"]) for i, te in enumerate(text_encoders)]
    for prefix, module, targets in parts:
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not part:
            continue
        module.add_adapter(config_class(r=spec["r"], alpha=spec["alpha"], target_modules=targets), adapter_name=adapter_name)
        result = set_peft_model_state_dict(module, part, adapter_name=adapter_name)
        if getattr(result, "unexpected_keys", None):
            raise ModelLoadError(f"{Path(file).name} does not fit this base model ({len(result.unexpected_keys)} "
                                 "unexpected weights); was it trained on another model family?")


# What a LoRA file was trained on, from its key names: FLUX has single-stream blocks (diffusers' names, kohya's and
# BFL's), SD3 only joint ones; UNet LoRAs are SD 1.x/2.x or SDXL (told apart by diffusers' own loader).
_FLUX_MARKERS = ("single_transformer_blocks", "single_blocks", "double_blocks")
_SD3_MARKERS = ("transformer_blocks", "joint_blocks")
_UNET_TITLE = "Stable Diffusion 1.x/2.x or SDXL"


def lora_family(keys) -> str:
    """"flux", "sd3" or "unet" (SD 1.x/2.x, SDXL) for a LoRA file's keys."""
    keys = list(keys)
    if any(marker in k for k in keys for marker in _FLUX_MARKERS):
        return "flux"
    if any(marker in k for k in keys for marker in _SD3_MARKERS) and not any("unet" in k for k in keys):
        return "sd3"
    return "unet"


def _check_family(name: str, keys, pipeline) -> None:
    """An SD3 LoRA on FLUX (or any such pair) is refused by name, before diffusers fails on missing layers."""
    from studio.models.families import FAMILIES, family_of_pipeline

    base = family_of_pipeline(pipeline)
    base_kind = base.name if base.name in ("sd3", "flux") else "unet"
    trained = lora_family(keys)
    if trained != base_kind:
        trained_title = FAMILIES[trained].title if trained in FAMILIES else _UNET_TITLE
        raise ModelLoadError(f"{name} is a {trained_title} LoRA and this base model is {base.title}: load it on a "
                             f"{trained_title} base model (the one it was trained on)")


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
    if any(".lokr_" in k or ".hada_" in k for k in keys):
        raise ModelLoadError(f"{file.name} is a LoKr / LoHa (LyCORIS) file, which diffusers cannot draw with: use it in "
                             "A1111 or ComfyUI; the studio draws the LoKr / LoHa runs it trained from their own files")
    _check_family(file.name, keys, pipeline)
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
