"""The detail stage: fine-tune the VAE decoder on the subject's photos (DreamBooth's second stage, on latent diffusion).

Imagen's DreamBooth also fine-tunes its super-resolution model on the subject, because the base model's upsampler
has never seen the subject's fine detail (a logo, a texture, a stripe) and smooths it away. In Stable Diffusion the
VAE decoder is what turns latents into pixels, so it plays that part: this module tunes it to reconstruct the
subject's photos from their latents.

Only the decoder side (post_quant_conv + decoder) learns. The encoder and quant_conv stay frozen, so the latent
space the UNet was trained in does not move: the UNet (base or DreamBooth-tuned) still fits the tuned decoder.
A decoder tuned on five photos alone would learn to paint the subject into every picture, so a distillation term
keeps it honest: on class images (pictures of the same class drawn by the untouched model) its output is pulled
toward the *original* decoder's output, weighted by `keep_weight` (the decoder's prior preservation).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# Defaults for a real model (SD 1.x/2.x/XL decoders, ~50 M parameters): a few hundred steps at 1e-5..1e-4 moves the
# decoder enough to draw the subject's detail without forgetting the rest; the built-in 64 px model uses the same.
DEFAULT_STEPS = 300
DEFAULT_LEARNING_RATE = 5e-5
DEFAULT_KEEP_WEIGHT = 1.0  # as DreamBooth's prior_loss_weight: subject and class terms count the same
DEFAULT_BATCH_SIZE = 2  # subject images per step, and as many class images
LOSSES = ("l1", "mse")
# L1 (the usual VAE reconstruction loss): at the same settings it moved the class images' decoding less than MSE
# (benchmarks/detail.py, built-in world: drift 0.88 vs 1.07 /255), while MSE fitted the subject closer (MAE 3.73 vs
# 4.36 /255); "mse" is there for subjects whose detail matters more than the rest.
DEFAULT_LOSS = "l1"
MAX_GRAD_NORM = 1.0
_CHUNK = 4  # images per frozen encode/decode pass: bounds memory at 512-1024 px

Progress = Callable[[int, int, float], None]  # (steps done, steps planned, this step's loss)


@dataclass(frozen=True)
class DetailReport:
    """What the detail stage did. Errors are mean absolute pixel errors in 0-255 units (lower is better) of
    encode -> decode round trips: the subject's photos, and the class images (NaN when none were given). The class
    images' error against their own pixels is what a user sees; their drift, against the original decoder's output,
    is what `keep_weight` holds down."""

    steps: int  # optimisation steps done
    planned_steps: int
    stopped: bool  # should_stop ended it early
    subject_mae_before: float
    subject_mae_after: float
    class_mae_before: float
    class_mae_after: float
    class_drift: float  # how far the class images' decoding moved from the original decoder's (0-255 MAE)
    seconds: float


def to_pixels(images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL RGB images (all the same size) -> float32 (N, 3, H, W) in [-1, 1], the VAE's input range."""
    if not images:
        return torch.zeros((0, 3, 0, 0))
    sizes = {image.size for image in images}
    if len(sizes) != 1:
        raise ValueError(f"the detail stage needs images of one size (the training resolution); got {sorted(sizes)}")
    arrays = np.stack([np.asarray(image.convert("RGB"), np.float32) for image in images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2) / 127.5 - 1.0


def _frozen_dtype(module: torch.nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


@torch.no_grad()
def _encode(vae, pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The encoder's mean latents (deterministic: no sampling), float32, on `device`."""
    dtype = _frozen_dtype(vae.encoder)
    chunks = [vae.encode(pixels[i:i + _CHUNK].to(device, dtype)).latent_dist.mean.float()
              for i in range(0, len(pixels), _CHUNK)]
    return torch.cat(chunks) if chunks else torch.zeros((0,), device=device)


def _decoder_modules(vae) -> list[torch.nn.Module]:
    return [m for m in (getattr(vae, "post_quant_conv", None), vae.decoder) if m is not None]


@torch.no_grad()
def _decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Decoded pixels in [-1, 1], float32 on the CPU, in chunks."""
    dtype = _frozen_dtype(vae.decoder)
    chunks = [vae.decode(latents[i:i + _CHUNK].to(dtype)).sample.float().clamp(-1, 1).cpu()
              for i in range(0, len(latents), _CHUNK)]
    return torch.cat(chunks)


def _mae_255(decoded: torch.Tensor, pixels: torch.Tensor) -> float:
    if len(pixels) == 0:
        return math.nan
    return float((decoded - pixels).abs().mean() * 127.5)


def measure_reconstruction(vae, images: Sequence[Image.Image], device: str | torch.device | None = None) -> float:
    """Mean absolute pixel error (0-255) of encoding then decoding `images` with `vae`; NaN for no images."""
    device = torch.device(device) if device is not None else next(vae.parameters()).device
    pixels = to_pixels(images)
    if len(pixels) == 0:
        return math.nan
    vae.to(device)
    return _mae_255(_decode(vae, _encode(vae, pixels, device)), pixels)


def reconstruct(vae, images: Sequence[Image.Image], device: str | torch.device | None = None) -> list[Image.Image]:
    """The images after an encode -> decode round trip: what the decoder keeps of them (before/after views)."""
    device = torch.device(device) if device is not None else next(vae.parameters()).device
    pixels = to_pixels(images)
    if len(pixels) == 0:
        return []
    vae.to(device)
    decoded = _decode(vae, _encode(vae, pixels, device))
    arrays = ((decoded.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    return [Image.fromarray(a) for a in arrays]


class _Cycle:
    """Indices in reshuffled epochs (every image seen once per epoch), drawn from the run's own generator."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n, self.generator, self.order = n, generator, []

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if not self.order:
                self.order = torch.randperm(self.n, generator=self.generator).tolist()
            out.append(self.order.pop())
        return out


def tune_decoder(
    vae,
    subject_images: Sequence[Image.Image],
    class_images: Sequence[Image.Image] = (),
    *,
    steps: int = DEFAULT_STEPS,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    keep_weight: float = DEFAULT_KEEP_WEIGHT,
    batch_size: int = DEFAULT_BATCH_SIZE,
    loss: str = DEFAULT_LOSS,
    device: str | torch.device | None = None,
    seed: int = 0,
    gradient_checkpointing: bool = False,
    should_stop: Callable[[], bool] | None = None,
    progress: Progress | None = None,
) -> DetailReport:
    """Fine-tune `vae`'s decoder in place (moved to `device`) so it reconstructs the subject's photos, while class
    images keep decoding as the original decoder decoded them. Images: PIL RGB, square, at the training resolution.

    Each step: `batch_size` subject photos (loss against their pixels) and `batch_size` class images (loss against
    the original decoder's output, times `keep_weight`). The trainable parts run in float32 (AdamW on half-precision
    weights loses small updates) and return to their own dtype at the end; frozen parts keep theirs throughout.
    Deterministic for a seed. `should_stop()` is asked before every step; `progress(done, planned, loss)` after.
    """
    if not subject_images:
        raise ValueError("the detail stage needs at least one subject photo")
    if loss not in LOSSES:
        raise ValueError(f"unknown detail loss {loss!r}; use one of: {', '.join(LOSSES)}")
    if steps < 0 or batch_size < 1 or learning_rate <= 0 or keep_weight < 0:
        raise ValueError("the detail stage needs steps >= 0, batch_size >= 1, learning_rate > 0 and keep_weight >= 0")
    tic = time.perf_counter()
    device = torch.device(device) if device is not None else next(vae.parameters()).device
    vae.to(device)
    trainable = _decoder_modules(vae)
    params = [p for module in trainable for p in module.parameters()]
    saved_dtype = _frozen_dtype(vae.decoder)
    saved_grad = {id(p): p.requires_grad for p in vae.parameters()}
    saved_checkpointing = bool(getattr(vae.decoder, "gradient_checkpointing", False))

    # The encoder is frozen, so each image's latent is computed once; so is the original decoder's output on the
    # class images (the distillation target): no second copy of the decoder has to stay in memory.
    subject_pixels, class_pixels = to_pixels(subject_images), to_pixels(class_images)
    subject_latents = _encode(vae, subject_pixels, device)
    class_latents = _encode(vae, class_pixels, device) if len(class_pixels) else None
    subject_before = _mae_255(_decode(vae, subject_latents), subject_pixels)
    class_targets = _decode(vae, class_latents) if class_latents is not None else None
    class_before = _mae_255(class_targets, class_pixels) if class_targets is not None else math.nan

    criterion = F.l1_loss if loss == "l1" else F.mse_loss
    generator = torch.Generator().manual_seed(seed)
    subjects, classes = _Cycle(len(subject_latents), generator), _Cycle(len(class_pixels), generator)
    for p in vae.parameters():
        p.requires_grad_(False)
    for module in trainable:
        module.to(torch.float32).train()
    for p in params:
        p.requires_grad_(True)
    if gradient_checkpointing and hasattr(vae, "enable_gradient_checkpointing"):
        vae.enable_gradient_checkpointing()  # only the decoder runs with grad enabled: only it recomputes
    # No weight decay: it would pull weights toward zero, not toward the original decoder; the distillation term is
    # the regulariser that means "stay as you were".
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)

    done, stopped = 0, False
    try:
        for step in range(steps):
            if should_stop is not None and should_stop():
                stopped = True
                break
            rows = subjects.take(min(batch_size, len(subject_latents)))
            decoded = vae.decode(subject_latents[rows]).sample
            total = criterion(decoded.float(), subject_pixels[rows].to(device))
            if class_targets is not None and keep_weight > 0:
                rows = classes.take(min(batch_size, len(class_pixels)))
                decoded = vae.decode(class_latents[rows]).sample
                total = total + keep_weight * criterion(decoded.float(), class_targets[rows].to(device))
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
            optimizer.step()
            done = step + 1
            if progress is not None:
                progress(done, steps, float(total.detach()))
    finally:
        # Leave the VAE as the pipelines expect it: eval mode, no gradients, its own dtype.
        optimizer.zero_grad(set_to_none=True)
        for module in trainable:
            module.to(saved_dtype).eval()
        for p in vae.parameters():
            p.requires_grad_(saved_grad[id(p)])
        if gradient_checkpointing and not saved_checkpointing and hasattr(vae, "disable_gradient_checkpointing"):
            vae.disable_gradient_checkpointing()

    subject_after = _mae_255(_decode(vae, subject_latents), subject_pixels)
    class_after = drift = math.nan
    if class_latents is not None:
        class_decoded = _decode(vae, class_latents)
        class_after, drift = _mae_255(class_decoded, class_pixels), _mae_255(class_decoded, class_targets)
    return DetailReport(done, steps, stopped, subject_before, subject_after, class_before, class_after, drift,
                        time.perf_counter() - tic)


def save_detail_vae(vae, folder: str | Path) -> Path:
    """Write the tuned VAE as a diffusers folder (config.json + safetensors) that `AutoencoderKL.from_pretrained`
    loads, e.g. as a pipeline's `vae=`; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vae.save_pretrained(folder, safe_serialization=True)
    return folder
