"""What a model family is trained to predict: how a batch is noised, the target, and each sample's loss weight.

SD 1.x/2.x and SDXL are DDPM models: noise at an integer timestep, predict the noise (or v). SD3 and FLUX.1 are
rectified flows: x_t = (1 - sigma) x_0 + sigma * noise, predict the velocity noise - x_0. Getting any of this wrong
trains without an error and gives a useless model, so each choice names where it comes from, and the memorisation
tests (tests/training/test_flow_families.py) train tiny models until they redraw their photos.

Every random draw takes the run's generator, so a resumed run continues exactly as an uninterrupted one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from studio.training.losses import min_snr_weights, target_for


@dataclass
class Noised:
    """A noised batch: the model's input, the time it is told, what it must predict, optional per-sample weights.
    `sigmas` (flow models) is kept for families that precondition the prediction (SD3)."""

    noisy: torch.Tensor
    timesteps: torch.Tensor
    target: torch.Tensor
    weights: torch.Tensor | None = None
    sigmas: torch.Tensor | None = None


class EpsilonObjective:
    """DDPM training as diffusers' train_dreambooth(_lora)(_sdxl).py: uniform integer timesteps, add_noise, epsilon or
    v targets (the base's prediction_type), optional min-SNR weights."""

    def __init__(self, scheduler_config: dict, snr_gamma: float = 0.0) -> None:
        from diffusers import DDPMScheduler

        self.scheduler = DDPMScheduler.from_config(scheduler_config)
        self.snr_gamma = snr_gamma

    def draw_times(self, rows: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, self.scheduler.config.num_train_timesteps, (rows,), generator=generator)

    def noised(self, latents: torch.Tensor, noise: torch.Tensor, times: torch.Tensor) -> Noised:
        times = times.to(latents.device)
        weights = None
        if self.snr_gamma > 0:
            weights = min_snr_weights(self.scheduler.alphas_cumprod, times, self.snr_gamma,
                                      self.scheduler.config.prediction_type)
        return Noised(self.scheduler.add_noise(latents, noise, times), times,
                      target_for(self.scheduler, latents, noise, times), weights)

    def prediction(self, output: torch.Tensor, noised: Noised) -> torch.Tensor:
        return output


# Flow-matching weighting schemes: diffusers.training_utils.compute_density_for_timestep_sampling and
# compute_loss_weighting_for_sd3, written against a generator (theirs draws from the global RNG, which would make a
# resumed run differ from an uninterrupted one).
WEIGHTING_SCHEMES = ("none", "logit_normal", "mode", "cosmap", "sigma_sqrt")


class FlowObjective:
    """Rectified-flow training as diffusers' train_dreambooth_lora_sd3.py and train_dreambooth_lora_flux.py:
    u ~ the weighting scheme's density, timesteps = the base scheduler's training timesteps at u (SD3's carry its
    shift of 3.0; FLUX's dynamic shifting leaves the training ones unshifted), x_t = (1 - sigma) x_0 + sigma noise,
    target noise - x_0 (x_0 itself when the output is preconditioned, SD3's), loss weighted by
    compute_loss_weighting_for_sd3."""

    def __init__(self, scheduler_config: dict, weighting_scheme: str, *, precondition_outputs: bool = False,
                 logit_mean: float = 0.0, logit_std: float = 1.0, mode_scale: float = 1.29) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler

        if weighting_scheme not in WEIGHTING_SCHEMES:
            raise ValueError(f"weighting_scheme = {weighting_scheme!r}; use one of: {', '.join(WEIGHTING_SCHEMES)}")
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)
        self.timesteps = scheduler.timesteps.float()  # num_train_timesteps values, 1000 ... 1
        self.sigmas = scheduler.sigmas.float()
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.scheme = weighting_scheme
        # SD3's script (--precondition_outputs, on by default): the prediction is turned into an x_0 estimate,
        # pred * (-sigma) + x_t, and compared with x_0; FLUX's compares the velocity itself.
        self.precondition_outputs = precondition_outputs
        self.logit_mean, self.logit_std, self.mode_scale = logit_mean, logit_std, mode_scale

    def draw_times(self, rows: int, generator: torch.Generator) -> torch.Tensor:
        """Indices into the training timesteps (integers, so a distributed run's rows slice them like SD's)."""
        if self.scheme == "logit_normal":
            u = torch.sigmoid(torch.randn(rows, generator=generator) * self.logit_std + self.logit_mean)
        else:
            u = torch.rand(rows, generator=generator)
            if self.scheme == "mode":
                u = 1 - u - self.mode_scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)
        return (u * self.num_train_timesteps).long().clamp(0, self.num_train_timesteps - 1)

    def noised(self, latents: torch.Tensor, noise: torch.Tensor, indices: torch.Tensor) -> Noised:
        indices = indices.cpu()
        timesteps = self.timesteps[indices].to(latents.device)
        sigmas = self.sigmas[indices].to(latents.device, latents.dtype).view(-1, *([1] * (latents.ndim - 1)))
        noisy = (1.0 - sigmas) * latents + sigmas * noise
        flat = sigmas.flatten().float()
        weights = None
        if self.scheme == "sigma_sqrt":
            weights = flat ** -2.0
        elif self.scheme == "cosmap":
            weights = 2 / (math.pi * (1 - 2 * flat + 2 * flat**2))
        return Noised(noisy, timesteps, latents if self.precondition_outputs else noise - latents, weights, sigmas)

    def prediction(self, output: torch.Tensor, noised: Noised) -> torch.Tensor:
        """The model's output in the target's terms."""
        if self.precondition_outputs:
            return output * (-noised.sigmas) + noised.noisy
        return output
