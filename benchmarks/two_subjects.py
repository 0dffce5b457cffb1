"""Two subjects in one run on the built-in model: does each one learn, and does either bleed into the other?

The subjects are the shipped concepts file's (`assets/two-subjects.toml`): the demo's red star with its cyan band
("sks star") and a blue circle with a cyan *bar* ("zwx circle"), told apart by the marking's direction, which the
judge reads (`Verdict.marking_kind`). One run teaches both (`--concepts`, the demo-full recipe), then every generation
is read by the judge:
  subject fidelity  "a photo of sks star on a <background> background" shows a red star with the band (and the same
                    for zwx circle: a blue circle with the bar)
  bleed             a subject's generations that show the *other* subject's marking (a star with a bar, a circle
                    with a band)
  drift (PRES)      each class's plain prompts ("a photo of a star", "a star") that show any marking
With `--alone`, each subject is also trained by itself with the same recipe, side by side. Each run keeps a checkpoint
every third of its steps and its output is the one its scorecard keeps (with two subjects: the best mean of both), as
a user's run does.

    python -m benchmarks.two_subjects [--steps 1200] [--batch 4] [--seeds 8] [--alone]
"""
from __future__ import annotations

from benchmarks import common  # first: sets OMP_WAIT_POLICY before torch loads

import argparse
import tempfile
import time
from pathlib import Path

from studio.concepts import load_concepts
from studio.engine import Studio
from studio.inference.generate import DrawSettings
from studio.world.judge import judge
from studio.world.render import BACKGROUNDS

CONCEPTS = common.REPO / "assets" / "two-subjects.toml"
LOOKS = {"sks": ("star", "red", "band"), "zwx": ("circle", "blue", "bar")}  # what the judge must read in each
USER = "local"


def draw(studio: Studio, model: str, prompt: str, seeds: int, steps: int):
    return [judge(image) for image in studio.generate(USER, model, DrawSettings(prompt, steps=steps, seed=0,
                                                                                  num_images=seeds)).images]


def score(studio: Studio, model: str, identifiers: list[str], seeds: int, steps: int) -> dict[str, dict]:
    scores = {}
    for identifier in identifiers:
        cls, colour, kind = LOOKS[identifier]
        other = next((LOOKS[i] for i in LOOKS if i != identifier))
        verdicts = [v for bg in BACKGROUNDS
                    for v in draw(studio, model, f"a photo of {identifier} {cls} on a {bg} background", seeds, steps)]
        drift = draw(studio, model, f"a photo of a {cls}", 2 * seeds, steps) + draw(studio, model, f"a {cls}",
                                                                                  2 * seeds, steps)
        scores[identifier] = {
            "subject": sum(v.cls == cls and v.colour == colour and v.marking and v.marking_kind == kind
                           for v in verdicts) / len(verdicts),
            "bleed": sum(v.marking and v.marking_kind == other[2] for v in verdicts) / len(verdicts),
            "drift": sum(v.marking for v in drift) / len(drift),
        }
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1200, help="training steps of the two-subject run")
    parser.add_argument("--batch", type=int, default=4, help="batch size of the two-subject run: 4 gives each subject "
                                                             "the 2 rows a step the demo recipe gives one (alone: 2)")
    parser.add_argument("--seeds", type=int, default=8, help="generations per prompt")
    parser.add_argument("--inference-steps", type=int, default=20)
    parser.add_argument("--alone", action="store_true", help="also train each subject by itself, for comparison")
    parser.add_argument("--base-model", default=str(common.BUILTIN))
    args = parser.parse_args()
    common.header("Two subjects in one run: subject fidelity, bleed and drift per subject")
    concepts = load_concepts(CONCEPTS)
    rows = []
    with tempfile.TemporaryDirectory() as home:
        studio = Studio(Path(home), base_model=args.base_model)
        # a checkpoint every third of the run, and the run's output is the one its scorecard keeps, as for a user
        settings = {"preview_every": args.steps, "keep_checkpoints": 3}
        runs = [("both in one run", [c.identifier for c in concepts], dict(concepts=concepts))]
        if args.alone:
            runs += [(f"{c.identifier} alone", [c.identifier], dict(concepts=[c])) for c in concepts]
        base = score(studio, "base", list(LOOKS), args.seeds, args.inference_steps)
        rows += [[f"base model: {LOOKS[i][1]} {LOOKS[i][0]}", "-", *_cells(base[i])] for i in LOOKS]
        for name, identifiers, given in runs:
            run_dir = Path(home) / name.replace(" ", "-")
            both = len(identifiers) > 1
            steps = args.steps if both else 600  # alone: the demo's own recipe
            batch = {"batch_size": args.batch} if both else {}
            tic = time.perf_counter()
            outcome = studio.train_folder(None, run_dir, ["demo-full"],
                                          {**settings, **batch, "max_steps": steps, "checkpoint_every": steps // 3},
                                          **given)
            minutes = (time.perf_counter() - tic) / 60
            card = studio.score_folder(run_dir, measure=False)
            kept = f", kept {card.pick.checkpoint}" if card.pick else ""
            if outcome.status != "finished":
                rows.append([name, outcome.status, "-", "-", "-"])
                continue
            scores = score(studio, str(run_dir), identifiers, args.seeds, args.inference_steps)
            size = args.batch if both else 2
            rows += [[f"{name}: {i} {LOOKS[i][0]}", f"{steps} × batch {size}{kept}, {minutes:.1f} min", *_cells(scores[i])]
                     for i in identifiers]
    common.table(["model", "training", "subject fidelity ↑", "bleed ↓", "drift (PRES) ↓"], rows)
    print("\nTargets: each subject >= 85 % subject fidelity, bleed 0 %; drift: each class's plain prompts showing "
          "a marking.")


def _cells(s: dict) -> list[str]:
    return [f"{s['subject']:.0%}", f"{s['bleed']:.0%}", f"{s['drift']:.0%}"]


if __name__ == "__main__":
    main()
