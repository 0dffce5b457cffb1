"""DreamBooth on the built-in model, measured like the paper (Table 1 and the prior-preservation ablation).

Trains the demo subject (a red star with a cyan stripe) through the engine as LoRA and full fine-tunes, with and
without prior preservation, then reads every generation with the judge:
  subject fidelity  "a photo of sks star on a <background> background" shows the star, red, with the stripe
  prompt fidelity   re-contextualised prompts (a small subject, or another colour, on a background no training
                    photo paired it with) honour the context and keep the subject; also shown per kind
  bare prompt       "a photo of sks star" with nothing else said (the tiny model's weak spot, shown apart)
  drift (PRES)      plain class prompts ("a photo of a star") that show the subject's stripe: lower is better
  diversity         distinct colours among plain "a photo of a star" generations (the class keeps its variety)

    python -m benchmarks.dreambooth [--variants full-prior,full-noprior,lora-prior,lora-noprior] [--seeds 4]
    python -m benchmarks.dreambooth --variants full-prior --overtrain 3   # the pick against the final weights

With `--overtrain N` each variant trains N times its preset's steps, a checkpoint every half of the preset's steps,
and the table gets two rows per variant: the checkpoint the run's scorecard picked (the run's output) and the final
weights (`Studio.use_checkpoint_folder(run, None)`), both read by this benchmark's judge with its own, larger
prompt set: an over-trained run's final weights against what the pick recovered.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.common import BUILTIN, DEMO, header, table
from studio.engine import Studio
from studio.inference.generate import DrawSettings
from studio.world.demo import (check_passes, drift_prompts, plain_subject_prompts, prompt_fidelity_prompts,
                               subject_fidelity_prompts)
from studio.world.judge import judge

VARIANTS = {
    "full-prior": (["demo-full"], {}),
    "full-noprior": (["demo-full"], {"with_prior_preservation": False}),
    "lora-prior": (["demo-lora"], {}),
    "lora-noprior": (["demo-lora"], {"with_prior_preservation": False}),
}
USER = "local"


def score(studio: Studio, model: str, seeds: list[int], steps: int) -> dict:
    def fraction(checks, n_seeds):
        hits = total = 0
        for check in checks:
            result = studio.generate(USER, model, DrawSettings(check.prompt, steps=steps, seed=0, num_images=n_seeds))
            hits += sum(check_passes(judge(image), check) for image in result.images)
            total += len(result.images)
        return hits / total

    subject = fraction(subject_fidelity_prompts(), len(seeds))
    # a new size and a new colour fail for different reasons: shown apart as well as together
    contexts = prompt_fidelity_prompts()
    resized = [c for c in contexts if "size" in c.expect]
    recoloured = [c for c in contexts if "colour" in c.expect]
    size_fid, colour_fid = (fraction(checks, max(1, len(seeds) // 2)) for checks in (resized, recoloured))
    context = (size_fid * len(resized) + colour_fid * len(recoloured)) / (len(resized) + len(recoloured))
    plain = fraction(plain_subject_prompts(), len(seeds))
    drift_images = []
    for check in drift_prompts()[:2]:  # the plain class prompts
        drift_images += studio.generate(USER, model, DrawSettings(check.prompt, steps=steps, num_images=3 * len(seeds))).images
    verdicts = [judge(image) for image in drift_images]
    marked = sum(v.marking for v in verdicts) / len(verdicts)
    colours = Counter(v.colour for v in verdicts if v.cls == "star")
    return {"subject": subject, "context": context, "size": size_fid, "colour": colour_fid, "plain": plain,
            "pres": marked, "colours": len(colours)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", type=int, default=4, help="generations per subject prompt")
    parser.add_argument("--steps", type=int, default=0, help="training steps (0 = the preset's)")
    parser.add_argument("--inference-steps", type=int, default=20)
    parser.add_argument("--base-model", default=str(BUILTIN))
    parser.add_argument("--overtrain", type=int, default=0, help="train N x the preset's steps; rows: picked and final")
    args = parser.parse_args()
    header("DreamBooth on the built-in model: subject fidelity, prompt fidelity and drift")
    seeds = list(range(args.seeds))
    with tempfile.TemporaryDirectory() as home:
        studio = Studio(Path(home), base_model=args.base_model)
        rows = [["base model (no training)", "-", *_fmt(score(studio, "base", seeds, args.inference_steps))]]
        for name in args.variants.split(","):
            presets, overrides = VARIANTS[name]
            _, _, demo_overrides = studio.demo_settings()
            settings = {**demo_overrides, **overrides, **({"max_steps": args.steps} if args.steps else {})}
            if args.overtrain:
                steps = settings.get("max_steps") or studio.resolve(presets, settings).config.max_steps
                settings.update(max_steps=args.overtrain * steps, checkpoint_every=steps // 2,
                                keep_checkpoints=2 * args.overtrain + 1)
            run_dir = Path(home) / name
            tic = time.perf_counter()
            outcome = studio.train_folder(DEMO, run_dir, presets, settings)
            minutes = (time.perf_counter() - tic) / 60
            if outcome.status != "finished":
                rows.append([name, f"{outcome.status}", *["-"] * 6])
                continue
            if not args.overtrain:
                rows.append([name, f"{minutes:.1f} min", *_fmt(score(studio, str(run_dir), seeds, args.inference_steps))])
                continue
            card = studio.score_folder(run_dir, measure=False)
            picked = card.pick.checkpoint if card.pick else "?"
            rows.append([f"{name} x{args.overtrain}: picked {picked}", f"{minutes:.1f} min",
                         *_fmt(score(studio, str(run_dir), seeds, args.inference_steps))])
            studio.use_checkpoint_folder(run_dir, None)  # the run's output becomes the last step's weights
            rows.append([f"{name} x{args.overtrain}: final step-{settings['max_steps']:06d}", "",
                         *_fmt(score(studio, str(run_dir), seeds, args.inference_steps))])
    table(["model", "training", "subject fidelity ↑", "prompt fidelity ↑", "(small / recoloured)", "bare prompt ↑",
           "drift (PRES) ↓", "star colours ↑"], rows)
    print("\nTargets: subject fidelity >= 90 %, prompt fidelity >= 85 %, drift with prior preservation at most half"
          " of drift without it; paper (SD): PRES 0.493 with vs 0.664 without prior preservation.")


def _fmt(s: dict) -> list[str]:
    return [f"{s['subject']:.0%}", f"{s['context']:.0%}", f"{s['size']:.0%} / {s['colour']:.0%}", f"{s['plain']:.0%}",
            f"{s['pres']:.0%}", str(s["colours"])]


if __name__ == "__main__":
    main()
