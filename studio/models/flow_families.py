"""Stable Diffusion 3 / 3.5 and FLUX.1: rectified-flow transformers, behind the same `ModelFamily` seam as SD.

What differs from SD, and where each choice comes from (diffusers' own DreamBooth LoRA scripts,
train_dreambooth_lora_sd3.py and train_dreambooth_lora_flux.py):
- the objective (studio.training.objectives.FlowObjective): sigma sampling by a weighting scheme (SD3: logit_normal,
  FLUX: none), x_t = (1 - sigma) x_0 + sigma noise, target noise - x_0; SD3 preconditions its output to an x_0
  estimate (the script's --precondition_outputs, on by default);
- latents are shifted and scaled by the VAE's shift_factor and scaling_factor (studio.training.batches);
- conditioning: SD3 joins two CLIPs' penultimate states (zero-padded to T5's width) with T5's states along the
  sequence and pools both CLIPs; FLUX takes T5's states and CLIP-L's pooled output, packs the latents 2x2 into
  tokens with position ids, and (FLUX.1-dev) takes the guidance as an input (the script's --guidance_scale 3.5);
- T5's sequence length: SD3's script trains at 77 tokens, FLUX's at 512 (never more than the tokenizer allows);
- text-encoder LoRA: SD3 trains both CLIPs, FLUX CLIP-L; T5 never trains (nor does either script);
- LoRA targets: the scripts' defaults; LoRA files in diffusers' format, which ComfyUI also loads for both families
  (no kohya file: kohya's names for these models are their own scheme, which diffusers converts from, not to).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from studio.models.family_base import Components, ModelFamily


class FlowFamily(ModelFamily):
    """What SD3 and FLUX share: a transformer trained by flow matching, a T5 encoder, flow-matching Euler sampling."""

    denoiser_name = "transformer"
    conv_targets = ()  # no ResNet convolutions: LoCon (an object preset's adapter) trains as LoRA
    kohya_format = False
    schedulers = ("default", "euler")  # FlowMatchEulerDiscreteScheduler, the base's own
    default_weighting = "none"
    precondition_outputs = False
    t5_length = 512
    t5_index = 1  # which text encoder is T5
    usual_guidance = 3.5  # what its model card draws with (FLUX.1-dev's guidance input; SD3.5's CFG is 7.0)

    def native_size(self, denoiser, vae) -> int:
        # FLUX's transformer config has no sample size; the VAE's is the pixel size both families were trained at
        return int(vae.config.sample_size)

    def check_settings(self, config) -> None:
        from studio.config import ConfigError

        if config.learns_token:
            raise ConfigError(f"method = {config.method!r}: textual inversion and pivotal tuning are not available for "
                              f"{self.title} yet (its T5 would need the token too); use method = 'lora'")
        if config.method == "lora" and config.adapter in ("lokr", "loha"):
            raise ConfigError(f"adapter = {config.adapter!r} is not available for {self.title}: diffusers cannot load "
                              "LoKr / LoHa for it; use 'lora' or 'dora'")
        if config.snr_gamma:
            raise ConfigError(f"snr_gamma is min-SNR weighting for noise-predicting models; {self.title} is trained by "
                              "flow matching: set snr_gamma = 0 and pick weighting_scheme instead")

    def components_from_pipeline(self, pipe, source) -> Components:
        encoders = [getattr(pipe, n, None) for n in self.text_encoder_names]
        tokenizers = [getattr(pipe, n, None) for n in self.tokenizer_names]
        return Components(self, source, tokenizers, encoders, pipe.vae, pipe.transformer, dict(pipe.scheduler.config))

    def build_pipeline(self, comps, scheduler, kind="txt2img"):
        parts = dict(zip(self.text_encoder_names + self.tokenizer_names, comps.text_encoders + comps.tokenizers))
        return self.pipeline_class(kind)(transformer=comps.denoiser, vae=comps.vae, scheduler=scheduler, **parts)

    def sequence_length(self, t5_tokenizer) -> int:
        return min(self.t5_length, int(t5_tokenizer.model_max_length))

    def draw_kwargs(self, pipe) -> dict[str, Any]:
        """T5 reads as many tokens when drawing as when training (the pipelines' defaults differ: SD3's is 256)."""
        return {"max_sequence_length": self.sequence_length(getattr(pipe, self.t5_tokenizer_name))}

    @property
    def t5_tokenizer_name(self) -> str:
        return self.tokenizer_names[self.t5_index]

    def tokenize(self, comps, prompts):
        ids = []
        for index, tok in enumerate(comps.tokenizers):
            length = self.sequence_length(tok) if index == self.t5_index else tok.model_max_length
            ids.append(tok(prompts, padding="max_length", max_length=length, truncation=True,
                           add_special_tokens=True, return_tensors="pt").input_ids)
        return ids

    def objective(self, comps, config):
        from studio.training.objectives import FlowObjective

        scheme = self.default_weighting if config.weighting_scheme == "auto" else config.weighting_scheme
        return FlowObjective(comps.scheduler_config, scheme, precondition_outputs=self.precondition_outputs)


class StableDiffusion3Family(FlowFamily):
    name = "sd3"
    title = "Stable Diffusion 3"
    pipeline_class_name = "StableDiffusion3Pipeline"
    inpaint_class_name = "StableDiffusion3InpaintPipeline"
    # "attn." as in the script: SD3.5 Medium's dual-attention blocks have a second, image-only attn2 it leaves alone
    lora_targets = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                    "attn.add_v_proj", "attn.to_add_out")
    text_encoder_names = ("text_encoder", "text_encoder_2", "text_encoder_3")
    trained_text_encoders = 2
    default_weighting = "logit_normal"
    precondition_outputs = True
    t5_length = 77
    t5_index = 2
    usual_guidance = 7.0

    def encode(self, comps, token_ids, resolution):
        clip_states, pooled = [], []
        for encoder, ids in zip(comps.text_encoders[:2], token_ids[:2]):
            out = encoder(ids.to(encoder.device), output_hidden_states=True)
            pooled.append(out[0])  # the projection's text_embeds
            clip_states.append(out.hidden_states[-2])
        t5 = comps.text_encoders[2]
        t5_states = t5(token_ids[2].to(t5.device))[0]
        clip = torch.cat(clip_states, dim=-1)
        clip = F.pad(clip, (0, t5_states.shape[-1] - clip.shape[-1]))
        return {"encoder_hidden_states": torch.cat([clip, t5_states.to(clip.dtype)], dim=-2),
                "pooled_projections": torch.cat(pooled, dim=-1)}

    def predict(self, comps, noisy, timesteps, cond, config):
        return comps.denoiser(hidden_states=noisy, timestep=timesteps, return_dict=False, **cond)[0]

    def save_lora(self, folder, denoiser_layers, text_layers):
        text_layers = list(text_layers or []) + [None, None]
        self.pipeline_class().save_lora_weights(
            folder, transformer_lora_layers=denoiser_layers, text_encoder_lora_layers=text_layers[0],
            text_encoder_2_lora_layers=text_layers[1], safe_serialization=True)


class FluxFamily(FlowFamily):
    name = "flux"
    title = "FLUX.1"
    pipeline_class_name = "FluxPipeline"
    inpaint_class_name = "FluxInpaintPipeline"
    lora_targets = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "attn.add_q_proj", "attn.add_k_proj",
                    "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
                    "ff_context.net.2")
    text_encoder_names = ("text_encoder", "text_encoder_2")
    trained_text_encoders = 1

    def encode(self, comps, token_ids, resolution):
        clip, t5 = comps.text_encoders
        pooled = clip(token_ids[0].to(clip.device), output_hidden_states=False).pooler_output
        states = t5(token_ids[1].to(t5.device), output_hidden_states=False)[0]
        return {"encoder_hidden_states": states, "pooled_projections": pooled.to(states.dtype)}

    def predict(self, comps, noisy, timesteps, cond, config):
        from diffusers import FluxPipeline

        batch, channels, height, width = noisy.shape
        packed = FluxPipeline._pack_latents(noisy, batch, channels, height, width)
        image_ids = FluxPipeline._prepare_latent_image_ids(batch, height // 2, width // 2, noisy.device, noisy.dtype)
        states = cond["encoder_hidden_states"]
        text_ids = torch.zeros(states.shape[1], 3, device=states.device, dtype=states.dtype)
        guidance = None
        if comps.denoiser.config.guidance_embeds:  # FLUX.1-dev is guidance-distilled; schnell is not
            guidance = torch.full((batch,), float(config.guidance_embedding), device=noisy.device)
        out = comps.denoiser(hidden_states=packed, timestep=timesteps / 1000, guidance=guidance, txt_ids=text_ids,
                             img_ids=image_ids, return_dict=False, **cond)[0]
        scale = comps.vae_scale_factor
        return FluxPipeline._unpack_latents(out, height * scale, width * scale, scale)

    def save_lora(self, folder, denoiser_layers, text_layers):
        self.pipeline_class().save_lora_weights(
            folder, transformer_lora_layers=denoiser_layers,
            text_encoder_lora_layers=(list(text_layers or []) + [None])[0], safe_serialization=True)
