"""Preview samples drawn with the weights being trained, on fixed prompts and seeds.

The class prompt *without* the identifier is always among them, and step 0 is
drawn before any training, so drift (the class turning into the subject) shows
up side by side with the subject prompt. Previews must not disturb training:
they run in eval mode, without gradients, with their own generators and the
global RNG restored afterwards, so a run with previews ends with the same
weights as one without.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch

from studio.config import TrainConfig
from studio.events import Preview
from studio.inference.pipelines import build_pipeline, call_kwargs, drawing_mode
from studio.models.families import Components
from studio.models.sources import model_fingerprint
from studio.runs import RunFolder


def preview_prompts(config: TrainConfig) -> list[str]:
    prompts = [config.prompt(p) for p in config.preview_prompts] or [config.resolved_instance_prompt]
    if config.resolved_class_prompt not in prompts:
        prompts.append(config.resolved_class_prompt)
    return prompts


class PreviewBudget:
    """Whether a preview due by the cadence fits the run's preview budget, measured as the run goes.

    Previews illustrate training and must not cost more than it: on a short run or a slow sampler, four rounds of
    previews can take longer than every training step together. A due preview is drawn when all the previews so
    far, this one and the last step's (always drawn) stay within `budget` of the projected run: the steps at
    their measured pace plus those previews.
    """

    def __init__(self, config: TrainConfig, batch_rows: int) -> None:
        self.budget = config.preview_budget
        self.max_steps = config.max_steps
        self.images = len(preview_prompts(config)) * len(config.preview_seeds)
        self.preview_steps = config.preview_steps
        self.batch_rows = batch_rows  # samples per training step (instance + class)
        self.step_seconds: list[float] = []
        self.preview_seconds = 0.0
        self.last_preview: float | None = None  # the cost of the newest preview, measured
        self.skipped = 0

    def saw_step(self, seconds: float) -> None:
        self.step_seconds.append(seconds)

    def saw_preview(self, seconds: float) -> None:
        self.preview_seconds += seconds
        self.last_preview = seconds

    def preview_cost(self) -> float:
        """The newest preview's measured cost; before any, one guessed from the training step's: a preview is
        images x sampler steps x 2 (guidance) UNet forwards, a step ~3 forwards' worth (forward + backward) per
        sample."""
        if self.last_preview is not None:
            return self.last_preview
        pace = self._pace()
        return pace * self.images * self.preview_steps * 2 / (3 * max(1, self.batch_rows))

    def allows(self) -> bool:
        if self.budget >= 1.0:
            return True
        cost = self.preview_cost()
        previews = self.preview_seconds + 2 * cost  # this one and the last step's
        fits = previews <= self.budget * (self._pace() * self.max_steps + previews)
        self.skipped += not fits
        return fits

    def _pace(self) -> float:
        recent = self.step_seconds[-20:]  # the first steps are slower (allocation, warm-up): the recent pace
        return sum(recent) / len(recent) if recent else 0.0


def draw_previews(comps: Components, config: TrainConfig, *, run: RunFolder, step: int, resolution: int, device, autocast) -> Preview:
    """`autocast()` is the run's precision context: frozen half-precision parts meet fp32 trainable ones."""
    prompts = preview_prompts(config)
    folder = run.preview_dir(step)
    folder.mkdir(parents=True, exist_ok=True)
    pipe = build_pipeline(comps)
    # Every prompt x seed in one batched call: previews are most of a short run's time (benchmarks.train_step).
    pairs = [(prompt, seed) for seed in config.preview_seeds for prompt in prompts]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad(), autocast(), \
            drawing_mode(comps):
        out = pipe([p for p, _ in pairs], num_inference_steps=config.preview_steps, guidance_scale=config.preview_guidance,
                   height=resolution, width=resolution,
                   generator=[torch.Generator("cpu").manual_seed(seed) for _, seed in pairs], **call_kwargs(pipe)).images
    images = []
    for (prompt, seed), image in zip(pairs, out):
        path = folder / f"p{prompts.index(prompt)}-s{seed}.png"
        image.save(path)
        images.append(run.relative(path))
    return Preview(step=step, images=tuple(images), prompts=tuple(p for p, _ in pairs), seeds=tuple(s for _, s in pairs))


def draw_base_previews(comps: Components, config: TrainConfig, *, run: RunFolder, cache_root: Path, resolution: int,
                       device, autocast) -> Preview:
    """Step 0 (the untouched base model) is the same for every run with the same base, prompts and seeds: cache it."""
    recipe = [model_fingerprint(comps.source), preview_prompts(config), list(config.preview_seeds), config.preview_steps,
              config.preview_guidance, resolution]
    cached = cache_root / hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]
    manifest = cached / "preview.json"
    target = run.preview_dir(0)
    if manifest.exists():
        event = Preview(**{k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(manifest.read_text()).items()})
        if all((cached / Path(p).name).exists() for p in event.images):
            target.mkdir(parents=True, exist_ok=True)
            for rel in event.images:
                shutil.copyfile(cached / Path(rel).name, run.path / rel)
            return Preview(step=0, images=event.images, prompts=event.prompts, seeds=event.seeds)
    event = draw_previews(comps, config, run=run, step=0, resolution=resolution, device=device, autocast=autocast)
    tmp = cached.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(target, tmp)
    (tmp / "preview.json").write_text(json.dumps({"step": 0, "images": event.images, "prompts": event.prompts, "seeds": event.seeds}))
    shutil.rmtree(cached, ignore_errors=True)
    tmp.rename(cached)
    return event
