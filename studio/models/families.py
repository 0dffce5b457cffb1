"""Model families: what differs between SD 1.x/2.x, SDXL, SD3 and FLUX.1, behind one interface
(studio.models.family_base), and the registry that picks one for a base model.

Each family knows how to load its components, turn prompts into the denoiser's
conditioning, what the denoiser is trained to predict (studio.training.objectives)
and how it is called, which layers LoRA targets, and how to build its pipelines
and save LoRA files. The trainer and the inference code ask the family; they
never branch on the model type themselves. SD3 and FLUX.1 live in
studio.models.flow_families.
"""
from __future__ import annotations

import threading

import torch

from studio.models.family_base import Components, ModelFamily, load_pipeline  # noqa: F401  (the seam, re-exported)
from studio.models.flow_families import FluxFamily, StableDiffusion3Family
from studio.models.sources import ModelLoadError, ModelSource


class StableDiffusionFamily(ModelFamily):
    """SD 1.x and 2.x: one CLIP text encoder, the last hidden state conditions the UNet."""

    name = "sd"
    title = "Stable Diffusion 1.x/2.x"
    pipeline_class_name = "StableDiffusionPipeline"
    inpaint_class_name = "StableDiffusionInpaintPipeline"

    def components_from_pipeline(self, pipe, source):
        return Components(self, source, [pipe.tokenizer], [pipe.text_encoder], pipe.vae, pipe.unet,
                          dict(pipe.scheduler.config))

    def build_pipeline(self, comps, scheduler, kind="txt2img"):
        return self.pipeline_class(kind)(
            vae=comps.vae, text_encoder=comps.text_encoders[0], tokenizer=comps.tokenizers[0], unet=comps.denoiser,
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
    title = "SDXL"
    text_encoder_names = ("text_encoder", "text_encoder_2")
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
            tokenizer=comps.tokenizers[0], tokenizer_2=comps.tokenizers[1], unet=comps.denoiser, scheduler=scheduler,
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


FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (StableDiffusionFamily(), StableDiffusionXLFamily(),
                                                          StableDiffusion3Family(), FluxFamily())}


def family_of_pipeline(pipe) -> ModelFamily:
    """The family a diffusers pipeline object belongs to (by its class)."""
    name = type(pipe).__name__
    for family in FAMILIES.values():
        if name in (family.pipeline_class_name, family.inpaint_class_name):
            return family
    raise ModelLoadError(f"{name} is not a pipeline of a family the studio knows")


def family_for(source: ModelSource) -> ModelFamily:
    if source.family == "auto":
        raise ModelLoadError("family unknown until loaded")
    return FAMILIES[source.family]


# transformers and diffusers build models under process-wide switches (empty "meta" weights, patched parameter
# registration): two threads loading at once corrupt each other's models ("Tensor.item() cannot be called on meta
# tensors"). A studio training on two devices, or drawing while a run starts, loads one model at a time.
LOADING_LOCK = threading.RLock()


def load_components(source: ModelSource, *, quantize: str = "none") -> Components:
    """Load a base model's parts on the CPU in fp32 (the trainer moves and casts them); `quantize` ("int8", "nf4"):
    the denoiser in 8 or 4 bits on the GPU, the rest in bf16."""
    with LOADING_LOCK:
        return _load_components(source, quantize)


def _load_components(source: ModelSource, quantize: str = "none") -> Components:
    if source.family == "auto":  # a hub id: its model_index.json names the family; else try SD, then SDXL
        from studio.models.sources import hub_family

        named = hub_family(source.location)
        if named is not None:
            comps = FAMILIES[named].load(source, quantize)
        else:
            try:
                comps = FAMILIES["sd"].load(source, quantize)
            except ModelLoadError as first:
                try:
                    comps = FAMILIES["sdxl"].load(source, quantize)
                except ModelLoadError:
                    raise first
    else:
        comps = family_for(source).load(source, quantize)
    check_finite(comps)
    return comps


def check_finite(comps: Components) -> None:
    """NaN/inf weights make every picture black; say so at load, not after an hour of training."""
    for name, module in [(comps.family.denoiser_name, comps.denoiser), ("vae", comps.vae)] + [(f"text_encoder_{i}", m) for i, m in enumerate(comps.text_encoders)]:
        for pname, param in module.named_parameters():
            if not torch.isfinite(param).all():
                raise ModelLoadError(f"{comps.source.label}: {name}.{pname} holds NaN or infinite weights; the file is damaged")
