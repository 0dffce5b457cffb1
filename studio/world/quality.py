"""How good are the judge and the built-in base model?

    python -m studio.world.quality [--model assets/builtin-model] [--renders 500] [--grid out.png]

prints the judge's per-field accuracy on fresh renders (clean and degraded)
and the base model's prompt agreement: the fraction of generations whose
class, colour and background, as read by the judge, match the prompt.
"""
from __future__ import annotations

import argparse
import io
import random
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from studio.world.judge import judge
from studio.world.render import Scene, caption, render, sample_scene

FIELDS = ("cls", "colour", "background", "size", "position", "marking")
PROMPT_FIELDS = ("cls", "colour", "background")


def degrade(image: Image.Image, rng: random.Random) -> Image.Image:
    """Blur, noise and JPEG: roughly what a tiny diffusion model's outputs look like."""
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    noise = np.random.default_rng(rng.randrange(1 << 30)).normal(0, rng.uniform(0, 6), (*image.size[::-1], 3))
    image = Image.fromarray(np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=rng.randint(40, 80))
    return Image.open(buf).convert("RGB")


def judge_accuracy(n: int = 500, seed: int = 0, degraded: bool = False, marked_share: float = 0.25) -> dict:
    """Per-field accuracy of the judge on `n` fresh renders (a quarter of them marked)."""
    rng = random.Random(seed)
    hits = dict.fromkeys(FIELDS, 0)
    for i in range(n):
        s = sample_scene(rng)
        if rng.random() < marked_share:
            s = Scene(s.cls, s.colour, s.background, s.size, s.position, marking=True)
        image = render(s, 7_000_000 + seed * 100_000 + i)
        verdict = judge(degrade(image, rng) if degraded else image)
        for f in FIELDS:
            hits[f] += getattr(verdict, f) == getattr(s, f)
    return {f: hits[f] / n for f in FIELDS}


def base_prompts(n: int, seed: int = 1234) -> list[tuple[str, Scene]]:
    """A fixed set of full prompts ("a photo of a red star on a blue background") with their scenes."""
    rng = random.Random(seed)
    scenes = [sample_scene(rng) for _ in range(n)]
    return [(caption(s), s) for s in scenes]


def load_pipeline(pipeline_or_folder):
    if not isinstance(pipeline_or_folder, (str, Path)):
        return pipeline_or_folder
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(str(pipeline_or_folder))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def generate(pipe, prompts: list[str], seed: int, steps: int = 20, guidance: float = 7.5) -> list[Image.Image]:
    generators = [torch.Generator().manual_seed(seed) for _ in prompts]
    return pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, generator=generators).images


def evaluate_base_model(pipeline_or_folder, n_prompts: int = 20, seeds=(0, 1), steps: int = 20,
                        guidance: float = 7.5) -> dict:
    """Fraction of generations whose judged class / colour / background match the prompt
    (and all three at once), over a fixed prompt set and fixed seeds."""
    pipe = load_pipeline(pipeline_or_folder)
    prompts = base_prompts(n_prompts)
    hits = dict.fromkeys(PROMPT_FIELDS + ("all",), 0)
    rows, images = [], []
    for seed in seeds:
        outs = generate(pipe, [p for p, _ in prompts], seed, steps, guidance)
        for (prompt, scene), image in zip(prompts, outs):
            verdict = judge(image)
            ok = {f: getattr(verdict, f) == getattr(scene, f) for f in PROMPT_FIELDS}
            ok["all"] = all(ok.values())
            for f, v in ok.items():
                hits[f] += v
            rows.append({"prompt": prompt, "seed": seed, "judged": verdict.as_dict(), **ok})
            images.append(image)
    total = len(prompts) * len(seeds)
    return {**{f: hits[f] / total for f in hits}, "n": total, "rows": rows, "images": images}


def contact_sheet(images: list[Image.Image], columns: int) -> Image.Image:
    w, h = images[0].size
    sheet = Image.new("RGB", (columns * (w + 2), -(-len(images) // columns) * (h + 2)), "black")
    for i, im in enumerate(images):
        sheet.paste(im, ((i % columns) * (w + 2), (i // columns) * (h + 2)))
    return sheet


def main() -> None:
    ap = argparse.ArgumentParser(description="judge accuracy and base-model quality")
    ap.add_argument("--model", default="assets/builtin-model")
    ap.add_argument("--renders", type=int, default=500)
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--grid", help="save the generations as a contact sheet (one row per seed)")
    args = ap.parse_args()

    for degraded in (False, True):
        acc = judge_accuracy(args.renders, degraded=degraded)
        print(f"judge on {args.renders} {'degraded' if degraded else 'clean'} renders: "
              + "  ".join(f"{f} {v:.1%}" for f, v in acc.items()))
    result = evaluate_base_model(args.model, args.prompts, args.seeds, guidance=args.guidance)
    for row in result["rows"]:
        j = row["judged"]
        print(f"{'ok ' if row['all'] else 'BAD'} seed {row['seed']}  {row['prompt']:<55} -> "
              f"{j['cls']} / {j['colour']} / {j['background']}")
    print(f"base model ({result['n']} generations, guidance {args.guidance}): "
          + "  ".join(f"{f} {result[f]:.1%}" for f in PROMPT_FIELDS + ("all",)))
    if args.grid:
        contact_sheet(result["images"], args.prompts).resize(
            (args.prompts * 66 * 3, len(args.seeds) * 66 * 3), Image.NEAREST).save(args.grid)


if __name__ == "__main__":
    main()
