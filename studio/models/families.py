"""Model families: what differs between SD 1.x/2.x and SDXL, behind one interface.

Each family knows how to load its components, turn prompts into the UNet's
conditioning, which layers LoRA targets, and how to build its pipelines and
save LoRA files. The trainer and the inference code ask the family; they never
branch on the model type themselves.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

import torch

from studio.models.sources import ModelLoadError, ModelSource


@dataclass
class Components:
    """The loaded parts of a base model (trainable or frozen) and the family that drives them."""

    family: "ModelFamily"
    source: ModelSource
    tokenizers: list[Any]
    text_encoders: list[torch.nn.Module]
    vae: torch.nn.Module
    unet: torch.nn.Module
    scheduler_config: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def native_resolution(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")


class ModelFamily:
    name = "base"
    pipeline_class_name = ""
    inpaint_class_name = ""
    unet_lora_targets = ("to_q", "to_k", "to_v", "to_out.0")
    text_lora_targets = ("q_proj", "k_proj", "v_proj", "out_proj")
    # LoCon's extra targets: the ResNet blocks' convolutions, where SD-style UNets draw edges and texture
    unet_conv_targets = ("conv1", "conv2", "conv_shortcut")

    # -- loading ---------------------------------------------------------------
    def pipeline_class(self, kind: str = "txt2img"):
        import diffusers

        return getattr(diffusers, self.inpaint_class_name if kind == "inpaint" else self.pipeline_class_name)

    def load(self, source: ModelSource) -> Components:
        pipe = load_pipeline(self.pipeline_class(), source)
        return self.components_from_pipeline(pipe, source)

    def components_from_pipeline(self, pipe, source: ModelSource) -> Components:
        raise NotImplementedError

    def build_pipeline(self, comps: Components, scheduler, kind: str = "txt2img"):
        raise NotImplementedError

    # -- conditioning ----------------------------------------------------------
    def tokenize(self, comps: Components, prompts: list[str]) -> list[torch.Tensor]:
        return [
            tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
            for tok in comps.tokenizers
        ]

    def encode(self, comps: Components, token_ids: list[torch.Tensor], resolution: int) -> dict[str, Any]:
        """UNet keyword arguments (encoder_hidden_states, ...) for a batch of tokenized prompts."""
        raise NotImplementedError

    def save_lora(self, folder, unet_layers: dict, text_layers: list[dict | None]) -> None:
        raise NotImplementedError


class StableDiffusionFamily(ModelFamily):
    """SD 1.x and 2.x: one CLIP text encoder, the last hidden state conditions the UNet."""

    name = "sd"
    pipeline_class_name = "StableDiffusionPipeline"
    inpaint_class_name = "StableDiffusionInpaintPipeline"

    def components_from_pipeline(self, pipe, source):
        return Components(self, source, [pipe.tokenizer], [pipe.text_encoder], pipe.vae, pipe.unet, dict(pipe.scheduler.config))

    def build_pipeline(self, comps, scheduler, kind="txt2img"):
        return self.pipeline_class(kind)(
            vae=comps.vae, text_encoder=comps.text_encoders[0], tokenizer=comps.tokenizers[0], unet=comps.unet,
            scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )

    def encode(self, comps, token_ids, resolution):
        encoder = comps.text_encoders[0]
        hidden = encoder(token_ids[0].to(encoder.device))[0]
        return {"encoder_hidden_states": hidden}

    def save_lora(self, folder, unet_layers, text_layers):
        self.pipeline_class().save_lora_weights(
            folder, unet_lora_layers=unet_layers, text_encoder_lora_layers=text_layers[0] if text_layers else None,
            safe_serialization=True,
        )


class StableDiffusionXLFamily(ModelFamily):
    """SDXL: two text encoders (penultimate states concatenated), pooled text and size ids as added conditioning."""

    name = "sdxl"
    pipeline_class_name = "StableDiffusionXLPipeline"
    inpaint_class_name = "StableDiffusionXLInpaintPipeline"

    def components_from_pipeline(self, pipe, source):
        return Components(
            self, source, [pipe.tokenizer, pipe.tokenizer_2], [pipe.text_encoder, pipe.text_encoder_2],
            pipe.vae, pipe.unet, dict(pipe.scheduler.config),
        )

    def build_pipeline(self, comps, scheduler, kind="txt2img"):
        return self.pipeline_class(kind)(
            vae=comps.vae, text_encoder=comps.text_encoders[0], text_encoder_2=comps.text_encoders[1],
            tokenizer=comps.tokenizers[0], tokenizer_2=comps.tokenizers[1], unet=comps.unet, scheduler=scheduler,
        )

    def encode(self, comps, token_ids, resolution):
        states, pooled = [], None
        for encoder, ids in zip(comps.text_encoders, token_ids):
            out = encoder(ids.to(encoder.device), output_hidden_states=True)
            states.append(out.hidden_states[-2])
            pooled = out[0]  # the projection model's text_embeds (the last encoder wins, as in SDXL)
        batch = pooled.shape[0]
        # (original size, crop top-left, target size): we train on square crops at `resolution`.
        time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], dtype=pooled.dtype)
        return {
            "encoder_hidden_states": torch.cat(states, dim=-1),
            "added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids.repeat(batch, 1).to(pooled.device)},
        }

    def save_lora(self, folder, unet_layers, text_layers):
        text_layers = list(text_layers or []) + [None, None]
        self.pipeline_class().save_lora_weights(
            folder, unet_lora_layers=unet_layers, text_encoder_lora_layers=text_layers[0],
            text_encoder_2_lora_layers=text_layers[1], safe_serialization=True,
        )


FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (StableDiffusionFamily(), StableDiffusionXLFamily())}


def load_pipeline(pipeline_class, source: ModelSource, **kwargs):
    """The real diffusers loaders, with failures turned into advice."""
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    common = dict(dtype=torch.float32, **kwargs)
    try:
        if source.kind == "single_file":
            return pipeline_class.from_single_file(
                source.location, config=source.config_dir, local_files_only=source.config_dir is not None or offline,
                **common,
            )
        extra = {"safety_checker": None, "requires_safety_checker": False} if "XL" not in pipeline_class.__name__ else {}
        return pipeline_class.from_pretrained(
            source.location, local_files_only=offline or source.kind != "hub", use_safetensors=not source.allow_pickle,
            **extra, **common,
        )
    except ModelLoadError:
        raise
    except Exception as exc:  # diffusers raises many types here; the user needs one clear message
        raise ModelLoadError(_advice(source, exc)) from exc


def _advice(source: ModelSource, exc: Exception) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if source.kind == "hub":
        return (f"could not load {source.location!r} from the Hugging Face Hub ({text[:300]}). Without network, download "
                "the model elsewhere and pass its local folder with --base-model PATH")
    if source.kind == "single_file" and source.config_dir is None:
        return (f"could not load the single file {source.location!r} ({text[:300]}). Offline, the studio needs the matching "
                "diffusers config: pass a folder of the same architecture with --base-config PATH")
    return f"could not load {source.location!r} ({text[:400]}); check the files are complete and unmodified"


def family_for(source: ModelSource) -> ModelFamily:
    if source.family == "auto":
        raise ModelLoadError("family unknown until loaded")
    return FAMILIES[source.family]


# transformers and diffusers build models under process-wide switches (empty "meta" weights, patched parameter
# registration): two threads loading at once corrupt each other's models ("Tensor.item() cannot be called on meta
# tensors"). A studio training on two devices, or drawing while a run starts, loads one model at a time.
LOADING_LOCK = threading.RLock()


def load_components(source: ModelSource) -> Components:
    """Load a base model's parts on the CPU in fp32 (the trainer moves and casts them)."""
    with LOADING_LOCK:
        return _load_components(source)


def _load_components(source: ModelSource) -> Components:
    if source.family == "auto":  # a hub id: try SD first, then SDXL, with the real loaders
        try:
            comps = FAMILIES["sd"].load(source)
        except ModelLoadError as first:
            try:
                comps = FAMILIES["sdxl"].load(source)
            except ModelLoadError:
                raise first
    else:
        comps = family_for(source).load(source)
    check_finite(comps)
    return comps


def check_finite(comps: Components) -> None:
    """NaN/inf weights make every picture black; say so at load, not after an hour of training."""
    for name, module in [("unet", comps.unet), ("vae", comps.vae)] + [(f"text_encoder_{i}", m) for i, m in enumerate(comps.text_encoders)]:
        for pname, param in module.named_parameters():
            if not torch.isfinite(param).all():
                raise ModelLoadError(f"{comps.source.label}: {name}.{pname} holds NaN or infinite weights; the file is damaged")
