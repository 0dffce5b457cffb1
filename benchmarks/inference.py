"""Compare grids vs separate generations, and batched vs one-by-one class-image generation.

    python -m benchmarks.inference [--prompts 3] [--steps 20] [--rounds 2] [--class-images 8] [--base-model PATH]

A compare grid of k prompts x m models (the base + two LoRAs) draws each model's prompts in one
batched pipeline call, with LoRAs attached once as named adapters and switched per column. We time it
against k*m separate `generate` calls (each cell's own `seconds`, i.e. its denoising + decode time).
The LoRAs hold random non-zero weights (peft adapters saved with `save_lora_files`), so no training
run is needed and the adapters really change the UNet's output.
"""
from __future__ import annotations

from benchmarks import common  # first: sets OMP_WAIT_POLICY before torch loads

import argparse
import time
from pathlib import Path

import torch

PROMPTS = ["a photo of sks star", "a photo of a star on a beach", "a painting of a star", "a red star at night",
           "a photo of a circle", "a blue square", "a photo of sks star in the snow", "a green triangle"]


def random_lora(source, folder: Path, seed: int) -> Path:
    """A LoRA with non-zero weights on the UNet attention projections, written as a training run would."""
    from peft import LoraConfig, get_peft_model_state_dict

    from studio.models.families import load_components
    from studio.models.lora_formats import save_lora_files

    torch.manual_seed(seed)
    comps = load_components(source)
    # init_lora_weights=False keeps peft's random init of B too (the default zeroes B: a no-op adapter)
    comps.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                                      target_modules=list(comps.family.unet_lora_targets)))
    paths = save_lora_files(folder, comps.family, get_peft_model_state_dict(comps.unet), None, rank=4, alpha=4)
    return paths["diffusers"]


def class_images(comps, cache_root: Path, count: int, batch: int, steps: int, resolution: int) -> float:
    """Images per second for `count` fresh class images drawn `batch` at a time."""
    from studio.training.prior import ensure_class_images

    tic = time.perf_counter()
    ensure_class_images(comps, cache_root=cache_root, class_prompt="a photo of a star", count=count,
                        resolution=resolution, steps=steps, guidance=7.5, batch_size=batch,
                        device=torch.device("cpu"), emit=lambda e: None)
    return count / (time.perf_counter() - tic)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=3, help="k prompts (rows)")
    ap.add_argument("--steps", type=int, default=20, help="denoising steps per picture")
    ap.add_argument("--rounds", type=int, default=2, help="grid / singles rounds, alternated")
    ap.add_argument("--class-images", type=int, default=8)
    ap.add_argument("--class-steps", type=int, default=25)
    ap.add_argument("--base-model", default=None)
    args = ap.parse_args()
    tmp = common.temp_root("inference")
    model, described = common.base_model(args.base_model, tmp)

    import studio.models.lora_formats as lora_formats
    from studio.engine import Studio
    from studio.inference.generate import DrawSettings
    from studio.models.families import load_components

    studio = Studio(tmp / "home", base_model=model)
    source = studio.base_models.source()
    loras = [random_lora(source, tmp / f"lora{i}", seed=i + 1) for i in range(2)]
    models = ["base", *map(str, loras)]
    prompts = PROMPTS[: args.prompts]
    settings = DrawSettings(prompts[0], steps=args.steps, guidance=7.5)

    # Count adapter loads: after the warm-up, a grid must only switch adapters, never load them again.
    loads = {"n": 0}
    original = lora_formats.load_lora_for_inference

    def counting(*a, **k):
        loads["n"] += 1
        return original(*a, **k)

    lora_formats.load_lora_for_inference = counting
    studio.compare("local", models, prompts, settings, [0])  # warm-up: loads the base and attaches both adapters
    warm_loads, loads["n"] = loads["n"], 0
    grid_s, cells_s = [], []
    for _ in range(args.rounds):
        grid_s.append(studio.compare("local", models, prompts, settings, [0]).seconds)
        cells_s.append(sum(studio.generate("local", m, DrawSettings(p, steps=args.steps, guidance=7.5, seed=0)).seconds
                           for p in prompts for m in models))

    common.header("Inference: compare grid vs separate generations; class images batched vs one by one")
    print(f"- base model: {described}; {len(prompts)} prompts x {len(models)} models (base + 2 random LoRAs), "
          f"{args.steps} steps, guidance 7.5, seed 0, {args.rounds} alternated rounds\n")
    g, c = common.median(grid_s), common.median(cells_s)
    common.table(["what", "seconds (median)", "pictures", "s / picture"],
                 [("compare grid (one batched call per model)", g, len(prompts) * len(models), g / (len(prompts) * len(models))),
                  ("k*m separate generate() calls, sum of cells", c, len(prompts) * len(models), c / (len(prompts) * len(models))),
                  ("grid / sum of cells (goal <= 1.1x)", f"{g / c:.2f}x {'ok' if g / c <= 1.1 else 'MISSED'}", "", "")])
    print(f"Adapter loads: {warm_loads} during the warm-up grid, {loads['n']} during the {args.rounds * 2} timed "
          f"grids/single passes: adapters are {'switched, not reloaded' if loads['n'] == 0 else 'RELOADED (bug)'}.\n")

    comps = load_components(source)
    resolution = comps.native_resolution
    rates: dict[int, list[float]] = {4: [], 1: []}
    for r in range(args.rounds):
        for batch in (4, 1):  # a fresh cache folder each time: every image is really drawn
            rates[batch].append(class_images(comps, tmp / f"class-{batch}-{r}", args.class_images, batch,
                                             args.class_steps, resolution))
    b4, b1 = common.median(rates[4]), common.median(rates[1])
    print(f"Class images: {args.class_images} per measurement, {args.class_steps} steps, guidance 7.5, {resolution} px\n")
    common.table(["class-image generation", "images / s (median)"],
                 [("ensure_class_images, class_image_batch 4", b4), ("one pipeline call per image (batch 1)", b1),
                  ("speed-up of batching", f"{b4 / b1:.2f}x")])


if __name__ == "__main__":
    main()
