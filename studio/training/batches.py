"""Work done once before the loop: image latents and prompt embeddings, and the batch sampler.

The VAE and a frozen text encoder give the same answer every step, so the
loop would waste most of its time recomputing them. We keep each image's
latent distribution (mean and std: sampling from it each step keeps the VAE's
noise as regularisation) and each prompt's conditioning in memory.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from studio.models.families import Components


def image_tensor(images: Sequence[Image.Image], resolution: int) -> torch.Tensor:
    """PIL images -> (N, 3, R, R) in [-1, 1], resized (they arrive square-cropped)."""
    arrays = []
    for img in images:
        img = img.convert("RGB")
        if img.size != (resolution, resolution):
            img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
        arrays.append(np.asarray(img, dtype=np.float32) / 127.5 - 1.0)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class LatentSource:
    """Latents for a fixed set of images: cached distributions, or a VAE pass each time (cache off)."""

    def __init__(self, comps: Components, pixels: torch.Tensor, *, cache: bool, flip: bool, device, dtype, chunk: int = 8):
        self.vae = comps.vae
        self.scale = float(comps.vae.config.scaling_factor)
        self.shift = float(getattr(comps.vae.config, "shift_factor", None) or 0.0)
        self.flip = flip
        self.device, self.dtype = device, dtype
        self.pixels = pixels
        self.count = pixels.shape[0]
        self.mean = self.std = None
        if cache:
            views = torch.cat([pixels, pixels.flip(-1)]) if flip else pixels
            means, stds = [], []
            with torch.no_grad():
                for part in views.split(chunk):
                    dist = self.vae.encode(part.to(device, dtype)).latent_dist
                    means.append(dist.mean.float())
                    stds.append(dist.std.float())
            self.mean, self.std = torch.cat(means), torch.cat(stds)

    def sample(self, index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        flipped = torch.zeros_like(index, dtype=torch.bool)
        if self.flip:
            flipped = torch.rand(index.shape, generator=generator, device=generator.device) < 0.5
        if self.mean is not None:
            rows = (index + flipped.long() * self.count).to(self.mean.device)
            mean, std = self.mean[rows], self.std[rows]
            noise = torch.randn(mean.shape, generator=generator, device=generator.device).to(mean.device)
            latents = mean + std * noise
        else:
            pixels = self.pixels[index]
            pixels = torch.where(flipped.view(-1, 1, 1, 1), pixels.flip(-1), pixels)
            with torch.no_grad():
                dist = self.vae.encode(pixels.to(self.device, self.dtype)).latent_dist
            noise = torch.randn(dist.mean.shape, generator=generator, device=generator.device).to(self.device)
            latents = dist.mean.float() + dist.std.float() * noise
        return (latents - self.shift) * self.scale


class PromptSource:
    """Conditioning per prompt: computed once when the text encoders are frozen, per batch when they train."""

    def __init__(self, comps: Components, prompts: Sequence[str], resolution: int, *, frozen: bool):
        self.comps, self.resolution, self.frozen = comps, resolution, frozen
        unique = list(dict.fromkeys(prompts))
        self.token_ids = {p: ids for p, ids in zip(unique, _split(comps.family.tokenize(comps, unique)))}
        self.cached: dict[str, dict[str, Any]] = {}
        if frozen:
            with torch.no_grad():
                for prompt in unique:
                    self.cached[prompt] = comps.family.encode(comps, self.token_ids[prompt], resolution)

    def batch(self, prompts: Sequence[str]) -> dict[str, Any]:
        if self.frozen:
            return _concat([self.cached[p] for p in prompts])
        ids = [torch.cat(parts) for parts in zip(*(self.token_ids[p] for p in prompts))]
        return self.comps.family.encode(self.comps, ids, self.resolution)


def _split(token_ids: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Per-encoder (N, L) tensors -> per-prompt lists of (1, L) tensors."""
    return [[ids[i : i + 1] for ids in token_ids] for i in range(token_ids[0].shape[0])]


def _concat(conds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in conds[0].items():
        if isinstance(value, dict):
            out[key] = {k: torch.cat([c[key][k] for c in conds]) for k in value}
        else:
            out[key] = torch.cat([c[key] for c in conds])
    return out


class EpochSampler:
    """Each image once per epoch in a seeded random order; its state goes into checkpoints."""

    def __init__(self, count: int, generator: torch.Generator) -> None:
        self.count, self.generator = count, generator
        self.order: list[int] = []
        self.position = 0

    def take(self, n: int) -> torch.Tensor:
        picks = []
        for _ in range(n):
            if self.position >= len(self.order):
                self.order = torch.randperm(self.count, generator=self.generator).tolist()
                self.position = 0
            picks.append(self.order[self.position])
            self.position += 1
        return torch.tensor(picks, dtype=torch.long)

    def state_dict(self) -> dict:
        return {"order": self.order, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.order, self.position = list(state["order"]), int(state["position"])
