"""The seam every model family sits behind: the loaded parts of a base model (`Components`) and what a family must
answer (`ModelFamily`), with the real diffusers loader. The families themselves: studio.models.families (SD 1.x/2.x,
SDXL, and the registry) and studio.models.flow_families (SD3, FLUX.1)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from studio.models.sources import ModelLoadError, ModelSource, gated_advice, is_gated_error


@dataclass
class Components:
    """The loaded parts of a base model (trainable or frozen) and the family that drives them."""

    family: "ModelFamily"
    source: ModelSource
    tokenizers: list[Any]
    text_encoders: list[torch.nn.Module]
    vae: torch.nn.Module
    denoiser: torch.nn.Module  # the UNet (SD, SDXL) or the transformer (SD3, FLUX)
    scheduler_config: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def native_resolution(self) -> int:
        return self.family.native_size(self.denoiser, self.vae)

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")


class ModelFamily:
    name = "base"
    title = ""  # what users call it, for messages
    pipeline_class_name = ""
    inpaint_class_name = ""
    denoiser_name = "unet"  # the pipeline's attribute, a full model's subfolder and the checkpoint's key prefix
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0")
    text_lora_targets = ("q_proj", "k_proj", "v_proj", "out_proj")
    # LoCon's extra targets: the ResNet blocks' convolutions, where SD-style UNets draw edges and texture
    conv_targets = ("conv1", "conv2", "conv_shortcut")
    text_encoder_names: tuple[str, ...] = ("text_encoder",)  # the pipeline's attributes, in the order encode takes
    trained_text_encoders: int | None = None  # how many text encoders train (with train_text_encoder); None = all
    kohya_format = True  # a kohya / A1111 LoRA file beside diffusers' (flow families: ComfyUI reads diffusers' file)
    schedulers: tuple[str, ...] | None = None  # the samplers it can draw with; None = every one of SCHEDULERS

    def native_size(self, denoiser, vae) -> int:
        """The pixel size the model was trained at, from its configs."""
        return int(denoiser.config.sample_size) * 2 ** (len(vae.config.block_out_channels) - 1)

    @property
    def tokenizer_names(self) -> tuple[str, ...]:
        """The pipeline's tokenizer attributes, each beside its text encoder's ("tokenizer_2" for "text_encoder_2")."""
        return tuple(n.replace("text_encoder", "tokenizer") for n in self.text_encoder_names)

    def check_settings(self, config) -> None:
        """Refuse settings this family cannot honour (a ValueError naming the setting), before any work."""
        from studio.config import ConfigError

        if config.weighting_scheme != "auto":
            raise ConfigError(f"weighting_scheme = {config.weighting_scheme!r} is for flow-matching models (SD3, FLUX); "
                              f"{self.title} trains with min-SNR weights instead (snr_gamma): leave it at 'auto'")

    # -- training --------------------------------------------------------------
    def objective(self, comps: "Components", config):
        """How a batch is noised and what is predicted (studio.training.objectives)."""
        from studio.training.objectives import EpsilonObjective

        return EpsilonObjective(comps.scheduler_config, config.snr_gamma)

    def predict(self, comps: "Components", noisy: torch.Tensor, timesteps: torch.Tensor, cond: dict[str, Any],
                config) -> torch.Tensor:
        """The denoiser's output for a noised batch, in the latents' layout."""
        return comps.denoiser(noisy, timesteps, **cond).sample

    def draw_kwargs(self, pipe) -> dict[str, Any]:
        """Arguments every drawing call passes besides the prompt, steps and guidance."""
        return {}

    @property
    def default_scheduler(self) -> str:
        """The studio's sampler for previews and class images: DPM-Solver++ gives clean pictures in 20 steps."""
        return "dpm++" if self.schedulers is None else self.schedulers[0]

    # -- loading ---------------------------------------------------------------
    def pipeline_class(self, kind: str = "txt2img"):
        import diffusers

        return getattr(diffusers, self.inpaint_class_name if kind == "inpaint" else self.pipeline_class_name)

    def load(self, source: ModelSource, quantize: str = "none") -> Components:
        if source.kind in ("folder", "builtin"):
            self.check_folder(Path(source.location))
        pipe = load_pipeline(self.pipeline_class(), source, **self.quantized_loading(quantize))
        return self.components_from_pipeline(pipe, source)

    def quantized_loading(self, quantize: str) -> dict[str, Any]:
        """from_pretrained's arguments that load the denoiser in 8 or 4 bits (bitsandbytes; QLoRA's NF4 with bf16
        compute), the rest in bf16: a 12B FLUX transformer in fp32 would not even fit in most machines' RAM."""
        if quantize == "none":
            return {}
        from diffusers import PipelineQuantizationConfig

        if quantize == "nf4":
            backend, options = "bitsandbytes_4bit", {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                                                     "bnb_4bit_compute_dtype": torch.bfloat16}
        else:
            backend, options = "bitsandbytes_8bit", {"load_in_8bit": True}
        return {"dtype": torch.bfloat16, "quantization_config": PipelineQuantizationConfig(
            quant_backend=backend, quant_kwargs=options, components_to_quantize=[self.denoiser_name])}

    def components_from_pipeline(self, pipe, source: ModelSource) -> Components:
        raise NotImplementedError

    def build_pipeline(self, comps: Components, scheduler, kind: str = "txt2img"):
        raise NotImplementedError

    def check_folder(self, folder: Path) -> None:
        """A model folder missing a part the studio needs (a FLUX folder without its T5, say) is refused before
        loading, by name: diffusers' own error lists every component it expected."""
        import json

        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
        needed = [self.denoiser_name, "vae", *self.text_encoder_names, *self.tokenizer_names]
        missing = [n for n in needed if not (index.get(n) or [None])[0] or not (folder / n).is_dir()]
        if missing:
            raise ModelLoadError(f"{folder}: this {self.title} model has no {', '.join(missing)}; the studio needs every "
                                 "part (each text encoder, T5 included) to train and draw: download the complete model")

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


def load_pipeline(pipeline_class, source: ModelSource, **kwargs):
    """The real diffusers loaders, with failures turned into advice."""
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    common = {"dtype": torch.float32, **kwargs}
    try:
        if source.kind == "single_file":
            return pipeline_class.from_single_file(
                source.location, config=source.config_dir, local_files_only=source.config_dir is not None or offline,
                **common,
            )
        # SD 1.x/2.x pipelines ship a safety checker the studio never uses (its pictures are the user's own)
        extra = ({"safety_checker": None, "requires_safety_checker": False}
                 if pipeline_class.__name__.startswith("StableDiffusion") and "XL" not in pipeline_class.__name__
                 and "3" not in pipeline_class.__name__ else {})
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
    if source.kind == "hub" and is_gated_error(exc):
        return gated_advice(source.location)
    if source.kind == "hub":
        return (f"could not load {source.location!r} from the Hugging Face Hub ({text[:300]}). Without network, download "
                "the model elsewhere and pass its local folder with --base-model PATH")
    if source.kind == "single_file" and source.config_dir is None:
        return (f"could not load the single file {source.location!r} ({text[:300]}). Offline, the studio needs the matching "
                "diffusers config: pass a folder of the same architecture with --base-config PATH")
    return f"could not load {source.location!r} ({text[:400]}); check the files are complete and unmodified"
