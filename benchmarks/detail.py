"""The detail stage on the built-in world: does tuning the VAE decoder on the subject's photos keep its detail,
and do other pictures still decode as before?

Nothing else is trained: the built-in model's VAE, the demo subject's five photos (a red star with a cyan stripe,
which no base-world picture has) and class images of stars, then `studio.training.detail.tune_decoder`. Errors are
mean absolute pixel errors (0-255, lower is better) of encode -> decode round trips:
  subject      the five training photos
  class        the class images the keep term trains on
  held-out     other pictures of the world (every class, colour, background), never seen by the tuning
  drift        how far the class images' decoding moved from the untouched decoder's (what `keep_weight` holds down)
  stripe read  share of the subject's reconstructions in which the world's judge still sees the cyan stripe

    python -m benchmarks.detail [--steps 300] [--learning-rate 5e-5] [--class-source base|render]
    python -m benchmarks.detail --with-fidelity RUN_DIR   # also: the run's generations, original vs tuned decoder

`--with-fidelity` takes a finished run of the demo subject (`python -m studio train --demo --output RUN_DIR`, about
5 minutes on a 2-core CPU), draws the subject and class prompts once as latents, decodes every latent with the
original and the tuned decoder, and reads both with the judge: the same pictures, only the decoder differs.
"""
from __future__ import annotations

from benchmarks import common  # first: sets OMP_WAIT_POLICY before torch loads

import argparse
import random
import tempfile
from pathlib import Path

import torch
from PIL import Image

from studio.training.detail import (DEFAULT_KEEP_WEIGHT, DEFAULT_LEARNING_RATE, DEFAULT_STEPS, DetailReport,
                                    measure_reconstruction, reconstruct, save_detail_vae, tune_decoder)
from studio.world.demo import check_passes, drift_prompts, subject_fidelity_prompts
from studio.world.judge import judge
from studio.world.render import BACKGROUNDS, COLOURS, POSITIONS, SIZES, Scene, render, sample_scene

USER = "local"
CLASS_PROMPT = "a photo of a star"  # the demo run's class prompt: what prior preservation draws


def load_vae(base: Path):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(base / "vae")


def demo_photos() -> list[Image.Image]:
    return [Image.open(p).convert("RGB") for p in sorted(common.DEMO.glob("*.png"))]


def rendered_stars(count: int, seed: int = 0) -> list[Image.Image]:
    rng = random.Random(seed)
    return [render(Scene("star", rng.choice(list(COLOURS)), rng.choice(list(BACKGROUNDS)), rng.choice(SIZES),
                         rng.choice(POSITIONS)), 60_000 + i) for i in range(count)]


def held_out(count: int) -> list[Image.Image]:
    rng = random.Random(12345)
    return [render(sample_scene(rng), 70_000 + i) for i in range(count)]


def base_stars(studio, count: int) -> list[Image.Image]:
    """Class images as DreamBooth makes them: the untouched model's drawings of the class prompt."""
    from studio.inference.generate import DrawSettings

    images: list[Image.Image] = []
    while len(images) < count:
        n = min(16, count - len(images))
        images += studio.generate(USER, "base", DrawSettings(CLASS_PROMPT, steps=20, seed=1000 + len(images),
                                                             num_images=n)).images
    return images


def stripe_read(vae, photos: list[Image.Image]) -> float:
    """Share of the photos' reconstructions the judge still reads as the subject (a red star with the stripe)."""
    verdicts = [judge(image) for image in reconstruct(vae, photos, "cpu")]
    return sum(v.cls == "star" and v.colour == "red" and v.marking for v in verdicts) / len(verdicts)


def run_variant(base: Path, classes, others, *, steps: int, lr: float, keep: float, loss: str):
    vae = load_vae(base)
    photos = demo_photos()
    others_before, stripe_before = measure_reconstruction(vae, others, "cpu"), stripe_read(vae, photos)
    report = tune_decoder(vae, photos, classes, steps=steps, learning_rate=lr, keep_weight=keep, loss=loss,
                          device="cpu", seed=0)
    others_after, stripe_after = measure_reconstruction(vae, others, "cpu"), stripe_read(vae, photos)
    return vae, report, (others_before, others_after), (stripe_before, stripe_after)


def arrow(a: float, b: float) -> str:
    return f"{a:.2f} → {b:.2f}"


def row(name: str, report: DetailReport, others, stripe) -> list[str]:
    return [name, arrow(report.subject_mae_before, report.subject_mae_after),
            arrow(report.class_mae_before, report.class_mae_after), arrow(*others), f"{report.class_drift:.2f}",
            f"{stripe[0]:.0%} → {stripe[1]:.0%}", f"{report.seconds:.0f} s"]


# -- fidelity: the run's own generations, decoded by each decoder --------------------------------------------------
@torch.no_grad()
def draw_latents(pipe, prompt: str, seeds: list[int], steps: int, guidance: float) -> torch.Tensor:
    size = int(pipe.unet.config.sample_size) * pipe.vae_scale_factor
    return pipe([prompt] * len(seeds), num_inference_steps=steps, guidance_scale=guidance, height=size, width=size,
                generator=[torch.Generator("cpu").manual_seed(s) for s in seeds], output_type="latent").images


@torch.no_grad()
def decode_images(pipe, vae, latents: torch.Tensor) -> list[Image.Image]:
    """As the pipeline decodes (scaling factor, postprocess), with the given VAE."""
    image = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
    return pipe.image_processor.postprocess(image, output_type="pil")


def fidelity(studio, run_dir: Path, tuned_vae, seeds: list[int], steps: int, guidance: float) -> list[list[str]]:
    ref = studio.drawable.path_ref(run_dir)
    cache = studio._pipelines()
    subject_checks, class_checks = subject_fidelity_prompts(), drift_prompts()[:2]  # the plain class prompts
    # subject hits, subject total, marked class pictures, class total, sum of the stripe's share in subject pictures
    hits = {"original": [0, 0, 0, 0, 0.0], "tuned": [0, 0, 0, 0, 0.0]}
    with cache.lock:
        pipe = cache.pipeline(ref)
        original = pipe.vae
        tuned_vae.to(original.device, original.dtype)
        for checks, kind in ((subject_checks, "subject"), (class_checks, "class")):
            for check in checks:
                latents = draw_latents(pipe, check.prompt, seeds if kind == "subject" else seeds * 2, steps, guidance)
                for name, vae in (("original", original), ("tuned", tuned_vae)):
                    verdicts = [judge(image) for image in decode_images(pipe, vae, latents)]
                    if kind == "subject":
                        hits[name][0] += sum(check_passes(v, check) for v in verdicts)
                        hits[name][1] += len(verdicts)
                        hits[name][4] += sum(v.marking_share for v in verdicts)
                    else:
                        hits[name][2] += sum(v.marking for v in verdicts)
                        hits[name][3] += len(verdicts)
    return [[name, f"{h[0] / h[1]:.0%} ({h[0]}/{h[1]})", f"{h[4] / h[1]:.3f}", f"{h[2] / h[3]:.0%} ({h[2]}/{h[3]})"]
            for name, h in hits.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--learning-rate", type=float, default=DEFAULT_LEARNING_RATE)
    parser.add_argument("--class-images", type=int, default=16)
    parser.add_argument("--class-source", choices=("base", "render"), default="base",
                        help="class images drawn by the base model (as DreamBooth does) or rendered by the world")
    parser.add_argument("--variants", default="default,no-keep,mse", help="comma list of: default, no-keep, mse")
    parser.add_argument("--with-fidelity", type=Path, default=None, metavar="RUN_DIR",
                        help="a finished demo run: its generations decoded by the original and the tuned decoder")
    parser.add_argument("--seeds", type=int, default=4, help="generations per subject prompt (--with-fidelity)")
    parser.add_argument("--inference-steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--base-model", type=Path, default=common.BUILTIN)
    args = parser.parse_args()
    common.header("Detail stage: the VAE decoder tuned on the demo subject's photos")
    from studio.engine import Studio

    with tempfile.TemporaryDirectory() as home:
        studio = Studio(Path(home), base_model=str(args.base_model))
        classes = (base_stars(studio, args.class_images) if args.class_source == "base"
                   else rendered_stars(args.class_images))
        others = held_out(16)
        variants = {"default": (f"keep {DEFAULT_KEEP_WEIGHT:g}, L1 (defaults)", DEFAULT_KEEP_WEIGHT, "l1"),
                    "no-keep": ("keep 0 (no keep term)", 0.0, "l1"),
                    "mse": (f"keep {DEFAULT_KEEP_WEIGHT:g}, MSE", DEFAULT_KEEP_WEIGHT, "mse")}
        rows, tuned = [], None
        for key in args.variants.split(","):
            name, keep, loss = variants[key]
            vae, report, others_ab, stripe = run_variant(args.base_model, classes, others, steps=args.steps,
                                                         lr=args.learning_rate, keep=keep, loss=loss)
            rows.append(row(name, report, others_ab, stripe))
            print(f"- {' | '.join(rows[-1])}", flush=True)
            if key == "default":
                tuned = vae
        print()
        common.table(["decoder tuning", "subject MAE ↓", "class MAE ↓", "held-out MAE ↓", "class drift ↓",
                      "stripe read ↑", "time"], rows)
        print(f"{args.steps} steps at lr {args.learning_rate:g}, batch 2 subject + 2 class images; 5 subject photos, "
              f"{args.class_images} class images ({'drawn by the base model' if args.class_source == 'base' else 'rendered'}"
              f", \"{CLASS_PROMPT}\"), 16 held-out world pictures. MAE: mean absolute pixel error, 0-255, "
              "before → after.\n")
        if args.with_fidelity is not None and tuned is not None:
            with tempfile.TemporaryDirectory() as folder:  # through the saved folder, as a pipeline would load it
                from diffusers import AutoencoderKL

                tuned = AutoencoderKL.from_pretrained(save_detail_vae(tuned, folder))
            common.table(["decoder", "subject fidelity ↑", "stripe share in subject pictures", "stripe on plain class prompts (PRES) ↓"],
                         fidelity(studio, args.with_fidelity, tuned, list(range(args.seeds)), args.inference_steps,
                                  args.guidance))
            print(f"Run {args.with_fidelity}: the same latents ({len(subject_fidelity_prompts())} subject prompts x "
                  f"{args.seeds} seeds; 2 class prompts x {2 * args.seeds} seeds, {args.inference_steps} steps) decoded "
                  "by each decoder, read by the world's judge.")


if __name__ == "__main__":
    main()
