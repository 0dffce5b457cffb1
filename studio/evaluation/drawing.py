"""Drawing the evaluation pictures: one batched call per model, per-picture seeds, the base model's cached.

Training-time scoring and `studio score` draw through the same pipeline builder, scheduler, steps and guidance as
the previews (`preview_steps`, `preview_guidance`), so a checkpoint scores the same either way, and pictures the
previews already drew at that step (same prompt, seed and settings) are reused instead of drawn again.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Callable, Mapping

import torch
from PIL import Image

from studio.evaluation.prompts import EvalPrompts
from studio.evaluation.scores import Drawn, EvalImages
from studio.inference.pipelines import call_kwargs
from studio.workspace import BASE_SCORES_CACHE


Reuse = Mapping[tuple[str, int], Image.Image]  # (prompt, seed) -> a picture already drawn with the same weights


def draw_eval_images(pipe, prompts: EvalPrompts, *, resolution: int, steps: int, guidance: float,
                     autocast: Callable = contextlib.nullcontext, reuse: Reuse | None = None) -> EvalImages:
    """Draw every (prompt, seed) not in `reuse` in one call. The global RNG is left as it was: scoring during
    training must not change the weights a run ends with."""
    reuse = dict(reuse or {})
    wanted = [pair for pair in prompts.pairs() if pair not in reuse]
    drawn: dict[tuple[str, int], Image.Image] = dict(reuse)
    if wanted:
        device = pipe.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad(), autocast():
            images = pipe([p for p, _ in wanted], num_inference_steps=steps, guidance_scale=guidance, height=resolution,
                          width=resolution, generator=[torch.Generator("cpu").manual_seed(s) for _, s in wanted],
                          **call_kwargs(pipe)).images
        drawn.update(zip(wanted, images))
    pick = lambda texts: tuple(Drawn(p, s, drawn[(p, s)]) for p in texts for s in prompts.seeds)
    return EvalImages(prompts, pick(prompts.subject), pick(prompts.recontext), pick(prompts.classes))


def base_cache_dir(cache_root: Path, fingerprint: str, prompts: EvalPrompts, *, resolution: int, steps: int,
                   guidance: float) -> Path:
    recipe = [fingerprint, prompts.pairs(), resolution, steps, guidance]
    return cache_root / BASE_SCORES_CACHE / hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]


def load_cached(folder: Path, prompts: EvalPrompts) -> dict[tuple[str, int], Image.Image] | None:
    """The untouched model's pictures for these prompts, if an earlier run drew them; None otherwise."""
    manifest = folder / "pictures.json"
    if not manifest.exists():
        return None
    try:
        names = {(p, s): folder / name for p, s, name in json.loads(manifest.read_text())}
        if set(names) != set(prompts.pairs()) or not all(path.exists() for path in names.values()):
            return None
        return {pair: Image.open(path).convert("RGB") for pair, path in names.items()}
    except (OSError, ValueError, TypeError):
        return None


def store_cached(folder: Path, drawn: EvalImages) -> None:
    """Written into a temporary folder and renamed: a crash never leaves a half cache that looks whole."""
    import shutil

    tmp = folder.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows = []
    for i, d in enumerate((*drawn.subject, *drawn.recontext, *drawn.classes)):
        name = f"{i:03d}.png"
        d.image.save(tmp / name)
        rows.append([d.prompt, d.seed, name])
    (tmp / "pictures.json").write_text(json.dumps(rows))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
