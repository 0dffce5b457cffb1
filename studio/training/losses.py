"""The DreamBooth loss: instance MSE + lambda x class-prior MSE, with optional min-SNR and offset noise.

Everything here works per sample over the *concatenated* batch
[instance images..., class images...]. The public reference script computes
min-SNR weights from all timesteps but applies them to half the batch when
prior preservation is on; weighting each sample by its own timestep's SNR,
then splitting, is what the min-SNR paper means.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossParts:
    total: torch.Tensor
    instance: torch.Tensor
    prior: torch.Tensor  # zero when prior preservation is off
    per_instance: torch.Tensor  # each instance row's (weighted) loss: the loss of each subject of the batch


def snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at each sample's timestep."""
    abar = alphas_cumprod.to(timesteps.device)[timesteps].float()
    return abar / (1.0 - abar)


def min_snr_weights(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Per-sample weights min(SNR, gamma)/SNR (epsilon) or min(SNR, gamma)/(SNR+1) (v-prediction)."""
    s = snr(alphas_cumprod, timesteps)
    clipped = torch.minimum(s, torch.full_like(s, gamma))
    if prediction_type == "v_prediction":
        return clipped / (s + 1.0)
    return clipped / s


def sample_noise(latents: torch.Tensor, offset: float, generator: torch.Generator | None) -> torch.Tensor:
    """Gaussian noise, plus a per-sample per-channel constant (offset noise) that lets the model learn overall brightness."""
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    if offset > 0:
        shift = torch.randn((latents.shape[0], latents.shape[1], 1, 1), generator=generator, device=latents.device, dtype=latents.dtype)
        noise = noise + offset * shift
    return noise


def target_for(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"prediction_type {prediction_type!r} is not supported; the studio trains epsilon and v_prediction models")


def dreambooth_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    num_instance: int,
    prior_weight: float,
    sample_weights: torch.Tensor | None = None,
) -> LossParts:
    """Split the concatenated batch after `num_instance` samples and combine the two means."""
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=tuple(range(1, pred.ndim)))
    if sample_weights is not None:
        per_sample = per_sample * sample_weights.to(per_sample.device)
    instance = per_sample[:num_instance].mean()
    if per_sample.shape[0] > num_instance:
        prior = per_sample[num_instance:].mean()
        return LossParts(instance + prior_weight * prior, instance, prior, per_sample[:num_instance])
    return LossParts(instance, instance, torch.zeros_like(instance), per_sample[:num_instance])
