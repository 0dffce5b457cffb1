"""How few sampler steps previews and scorecard pictures can take: the judge's verdicts at N steps against 50.

    python -m benchmarks.sampler_steps [--steps 8,10,12,16,20] [--seeds 6] [--model base] [--model RUN_DIR ...]

Previews and the scorecard draw with DPM-Solver++ at `preview_steps` (the scorecard reuses preview pictures, so
both use one setting). Fewer steps make both cheaper in proportion; the question is what the pictures lose.
For each model, the scorecard's own prompts for the demo subject (`studio.evaluation.prompts.eval_prompts`, the
built-in world's set: the subject on three backgrounds, two recontextualisations, two class prompts) are drawn
with the same seeds at each step count and at 50 steps, and every picture's verdict from the world's judge
(class, colour, background, size, the subject's band) is compared with the 50-step picture of the same prompt and
seed. Give a trained run (`--model runs/demo`) to see the subject's band too: the base model never draws it.
"""
from __future__ import annotations

from benchmarks import common  # first: sets OMP_WAIT_POLICY before torch loads

import argparse
import tempfile
import time
from pathlib import Path

from studio.config import TrainConfig
from studio.engine import Studio
from studio.evaluation.prompts import eval_prompts
from studio.inference.generate import DrawSettings
from studio.world.judge import judge

FIELDS = ("cls", "colour", "background", "size", "marking")
REFERENCE_STEPS = 50


def verdicts(studio: Studio, model: str, pairs: list[tuple[str, int]], steps: int) -> tuple[list[dict], float]:
    """The judge's verdict of every (prompt, seed) picture, and seconds per picture."""
    out, seconds = [], 0.0
    by_prompt: dict[str, list[int]] = {}
    for prompt, seed in pairs:
        by_prompt.setdefault(prompt, []).append(seed)
    for prompt, seeds in by_prompt.items():
        for seed in seeds:  # one picture per call: a seed means the same noise at every step count
            tic = time.perf_counter()
            result = studio.generate("local", model, DrawSettings(prompt, steps=steps, seed=seed, scheduler="dpm++"))
            seconds += time.perf_counter() - tic
            verdict = judge(result.images[0])
            out.append({f: getattr(verdict, f) for f in FIELDS})
    return out, seconds / max(1, len(pairs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="8,10,12,16,20")
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--model", action="append", default=[], help="'base' or a run folder (repeatable)")
    parser.add_argument("--base-model", default=str(common.BUILTIN))
    args = parser.parse_args()
    common.header(f"Sampler steps for previews and the scorecard: the judge's verdicts against {REFERENCE_STEPS} steps")
    config = TrainConfig(identifier=common.IDENTIFIER, class_noun=common.CLASS_NOUN, eval_seeds=tuple(range(args.seeds)))
    pairs = eval_prompts(config, world=True).pairs()
    rows = []
    with tempfile.TemporaryDirectory() as home:
        studio = Studio(Path(home), base_model=args.base_model)
        for model in args.model or ["base"]:
            reference, ref_seconds = verdicts(studio, model, pairs, REFERENCE_STEPS)
            for steps in [int(s) for s in args.steps.split(",")]:
                got, seconds = verdicts(studio, model, pairs, steps)
                same = lambda f: sum(g[f] == r[f] for g, r in zip(got, reference)) / len(got)
                every = sum(all(g[f] == r[f] for f in FIELDS) for g, r in zip(got, reference)) / len(got)
                marked = sum(g["marking"] for g in got) / len(got)
                rows.append([Path(model).name, steps, f"{every:.0%}", *(f"{same(f):.0%}" for f in FIELDS),
                             f"{marked:.0%}", f"{seconds:.2f}", f"{seconds / ref_seconds:.2f}"])
                print("- " + " | ".join(map(str, rows[-1])), flush=True)
    print()
    common.table(["model", "steps", "all fields agree", *(f"{f} agrees" for f in FIELDS), "band drawn",
                  "s / picture", f"time / {REFERENCE_STEPS} steps"], rows)
    print(f"{len(pairs)} pictures per row ({args.seeds} seeds x {len(pairs) // args.seeds} prompts); DPM-Solver++, "
          "guidance 7.5, the model's own resolution.")


if __name__ == "__main__":
    main()
