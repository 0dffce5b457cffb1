"""Subjects other than the demo star, with the same presets: does the recipe hold beyond the one it was tuned on?

Each subject is rendered in the demo subject's five views with the same kind of captions
(`studio.world.demo.write_subject`), trained with each preset (class noun and preview prompts changed to the
subject's, a checkpoint every third of the run), and read back from the run's own scorecard (the world's judge,
`studio/evaluation/world.py`): the base model, the final weights and the checkpoint the pick keeps.

    python -m benchmarks.subjects [--presets demo-full,demo-lora] [--subjects development,held-out] [--eval-seeds 4]

Two groups, kept apart on purpose:
  development  the three subjects looked at while the judge, the pick and the demo presets were last changed
  held-out     never looked at before this benchmark's first run; nothing is tuned on them
"""
from __future__ import annotations

from benchmarks import common  # first: sets OMP_WAIT_POLICY before torch loads

import argparse
import tempfile
import time
from pathlib import Path

from studio.engine import Studio
from studio.world.demo import write_subject

# (class, colour, the cyan band?)
SUBJECTS = {
    "development": [("square", "blue", True), ("triangle", "green", True), ("cross", "orange", False)],
    "held-out": [("circle", "yellow", True), ("star", "purple", False)],
}


def describe(cls: str, colour: str, marking: bool) -> str:
    return f"{colour} {cls} {'with the cyan band' if marking else 'without the band'}"


def scorecard_cells(row) -> list[str]:
    if row is None:
        return ["-"] * 4
    cell = lambda v: "-" if v is None else f"{v:.2f}"
    return [cell(row.subject_fidelity), cell(row.prompt_fidelity), cell(row.drift), cell(row.diversity)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="demo-full,demo-lora")
    parser.add_argument("--subjects", default="development,held-out", help="groups: development, held-out")
    parser.add_argument("--eval-seeds", type=int, default=4, help="seeds per scorecard prompt (the default run: 2)")
    parser.add_argument("--base-model", default=str(common.BUILTIN))
    args = parser.parse_args()
    common.header("Other subjects, same presets: the run's scorecard (final weights and the pick)")
    rows = []
    with tempfile.TemporaryDirectory() as home:
        studio = Studio(Path(home), base_model=args.base_model)
        for group in args.subjects.split(","):
            for cls, colour, marking in SUBJECTS[group]:
                photos = Path(home) / "photos" / f"{colour}-{cls}"
                write_subject(photos, cls, colour, marking=marking)
                for preset in args.presets.split(","):
                    steps = studio.resolve([preset], {}).config.max_steps
                    overrides = {"identifier": "sks", "class_noun": cls, "eval_seeds": list(range(args.eval_seeds)),
                                 "checkpoint_every": steps // 3, "keep_checkpoints": 3,
                                 "preview_prompts": [f"a photo of {{identifier}} {cls}",
                                                     f"a photo of a small {{identifier}} {cls} on a pink background"]}
                    run_dir = Path(home) / "runs" / f"{colour}-{cls}-{preset}"
                    tic = time.perf_counter()
                    outcome = studio.train_folder(photos, run_dir, [preset], overrides)
                    seconds = time.perf_counter() - tic
                    label = [group, describe(cls, colour, marking), preset]
                    if outcome.status != "finished":
                        rows.append([*label, outcome.status, *["-"] * 9])
                        continue
                    card = studio.score_folder(run_dir, measure=False)
                    final = card.rows[-1] if card.rows else None
                    picked = next((r for r in card.rows if card.pick and r.checkpoint == card.pick.checkpoint), None)
                    base_subject = scorecard_cells(card.base)[0]
                    rows.append([*label, f"{seconds:.0f} s", base_subject, *scorecard_cells(final),
                                 picked.checkpoint if picked else "-", *scorecard_cells(picked)[:3]])
                    print("- " + " | ".join(map(str, rows[-1])), flush=True)
    print()
    common.table(["group", "subject", "preset", "run", "base subject", "final: subject ↑", "prompt ↑", "drift ↓",
                  "diversity ↑", "picked", "picked: subject ↑", "prompt ↑", "drift ↓"], rows)
    print(f"Scorecard fractions over {args.eval_seeds} seeds per prompt. For a subject without the band, drift "
          "counts class pictures in the subject's own colour.")


if __name__ == "__main__":
    main()
