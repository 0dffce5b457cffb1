"""Generate, compare and inpaint with a base model, a trained LoRA, a full fine-tune or a checkpoint.

Seeds are per image (one CPU generator each), so "seed 3" draws the same
picture whether it is made alone, in a batch, or in a compare grid, and two
models compared with the same seed start from the same noise.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from PIL import Image

from studio.inference.grid import labelled_grid
from studio.inference.models import ModelRef
from studio.inference.pipelines import SCHEDULERS, PipelineCache, call_kwargs, native_size


class InferenceError(ValueError):
    """A request that cannot be drawn; the message says what to change."""


@dataclass(frozen=True)
class DrawSettings:
    prompt: str
    negative_prompt: str = ""
    steps: int = 25
    guidance: float = 7.5
    seed: int = 0
    num_images: int = 1
    scheduler: str = "default"
    size: int | None = None  # None = the model's native resolution

    def check(self) -> None:
        if not self.prompt.strip():
            raise InferenceError("the prompt is empty; describe the picture, e.g. 'a photo of sks dog on the beach'")
        if not 1 <= self.steps <= 200:
            raise InferenceError(f"steps = {self.steps}; use 1 to 200 (noisy results? try DDIM or ~100 steps)")
        if not 0.0 <= self.guidance <= 30.0:
            raise InferenceError(f"guidance = {self.guidance}; use 0 to 30")
        if not 1 <= self.num_images <= 16:
            raise InferenceError(f"num_images = {self.num_images}; use 1 to 16")
        if self.scheduler not in SCHEDULERS:
            raise InferenceError(f"scheduler {self.scheduler!r} unknown; use one of {', '.join(SCHEDULERS)}")


@dataclass
class DrawResult:
    images: list[Image.Image]
    seeds: list[int]
    seconds: float
    grid: Image.Image | None = None
    labels: list[str] = field(default_factory=list)


def _generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def _size(pipe, settings: DrawSettings) -> int:
    return settings.size or native_size(pipe)


def generate(cache: PipelineCache, ref: ModelRef, settings: DrawSettings) -> DrawResult:
    settings.check()
    seeds = [settings.seed + i for i in range(settings.num_images)]
    tic = time.perf_counter()
    with cache.lock, torch.no_grad():
        pipe = cache.pipeline(ref, settings.scheduler)
        size = _size(pipe, settings)
        images = pipe(
            [ref.spoken(settings.prompt)] * len(seeds),
            negative_prompt=[settings.negative_prompt] * len(seeds) if settings.negative_prompt else None,
            num_inference_steps=settings.steps, guidance_scale=settings.guidance, height=size, width=size,
            generator=_generators(seeds), **call_kwargs(pipe),
        ).images
    return DrawResult(images, seeds, time.perf_counter() - tic, labels=[ref.label] * len(images))


def compare(cache: PipelineCache, refs: list[ModelRef], prompts: list[str], settings: DrawSettings, seeds: list[int]) -> DrawResult:
    """Prompts (x seeds) down, models across, in one labelled grid; each model is loaded once and drawn with all prompts in one batch."""
    if not refs or not prompts or not seeds:
        raise InferenceError("compare needs at least one model, one prompt and one seed")
    if len(refs) * len(prompts) * len(seeds) > 64:
        raise InferenceError("that grid would have more than 64 pictures; use fewer prompts, models or seeds")
    for prompt in prompts:
        DrawSettings(prompt, steps=settings.steps, guidance=settings.guidance, scheduler=settings.scheduler).check()
    pairs = [(p, s) for p in prompts for s in seeds]
    columns: list[list[Image.Image]] = []
    tic = time.perf_counter()
    with cache.lock, torch.no_grad():
        for ref in refs:
            pipe = cache.pipeline(ref, settings.scheduler)
            size = _size(pipe, settings)
            columns.append(pipe(
                [ref.spoken(p) for p, _ in pairs], negative_prompt=[settings.negative_prompt] * len(pairs) if settings.negative_prompt else None,
                num_inference_steps=settings.steps, guidance_scale=settings.guidance, height=size, width=size,
                generator=_generators([s for _, s in pairs]), **call_kwargs(pipe),
            ).images)
    rows = [[column[i] for column in columns] for i in range(len(pairs))]
    row_labels = [f"{p} (seed {s})" for p, s in pairs]
    grid = labelled_grid(rows, row_labels, [r.label for r in refs])
    images = [img for row in rows for img in row]
    labels = [f"{r.label} | {p} | seed {s}" for p, s in pairs for r in refs]
    return DrawResult(images, [s for _, s in pairs for _ in refs], time.perf_counter() - tic, grid, labels)


def _model_mask(alpha: Image.Image, size: int) -> Image.Image:
    """Where the model may repaint, at its size: every pixel the feathered alpha touches
    (a box resize, so thin strokes survive a downscale)."""
    import numpy as np

    coverage = np.asarray(alpha.convert("F").resize((size, size), Image.Resampling.BOX))
    return Image.fromarray(np.where(coverage > 0, 255, 0).astype(np.uint8), "L")


def inpaint(cache: PipelineCache, ref: ModelRef, image: Image.Image, mask: Image.Image, settings: DrawSettings, strength: float = 0.85) -> DrawResult:
    """Repaint the white part of `mask` in `image` with the prompt (and the trained subject).

    "Only masked" inpainting: the model works at its own resolution on a square around the mask (with context,
    see studio.inference.inpaint_region), and the result is pasted back through a feathered mask. The pictures
    returned have the input's size (RGB); pixels farther than the feather from the mask are exactly the input's.
    A mask of another size is resized (nearest) to the picture's.
    """
    from studio.inference import inpaint_region as region

    settings.check()
    if not 0.0 < strength <= 1.0:
        raise InferenceError(f"strength = {strength}; use a value above 0 and at most 1")
    picture = image.convert("RGB")
    mask = region.binary_mask(mask, picture.size)
    if mask.getbbox() is None:
        raise InferenceError("the mask is empty; paint over the part of the picture to replace")
    alpha = region.feather(mask, region.feather_radius(picture.size))
    box = region.square_crop(region.mask_box(alpha), picture.size)
    side = box[2] - box[0]
    seeds = [settings.seed + i for i in range(settings.num_images)]
    tic = time.perf_counter()
    with cache.lock, torch.no_grad():
        pipe = cache.pipeline(ref, settings.scheduler, kind="inpaint")
        size = _size(pipe, settings)
        source = region.crop(picture, box).resize((size, size), Image.Resampling.LANCZOS)
        drawn = pipe(
            [ref.spoken(settings.prompt)] * len(seeds), image=source, mask_image=_model_mask(region.crop(alpha, box), size),
            strength=strength, num_inference_steps=settings.steps, guidance_scale=settings.guidance, height=size,
            width=size, generator=_generators(seeds), **call_kwargs(pipe),
        ).images
    images = [region.paste(picture, d.convert("RGB").resize((side, side), Image.Resampling.LANCZOS), alpha, box)
              for d in drawn]
    return DrawResult(images, seeds, time.perf_counter() - tic, labels=[ref.label] * len(images))
