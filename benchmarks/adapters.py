"""The five adapter types side by side on the built-in world: what each learns, what it drifts, what it weighs.

Every type trains the demo subject with the `demo-lora` preset (rank 8, 1e-3, 400 steps at batch 2, prior
preservation), the adapter the only thing changed, then the benchmark's judge reads its generations exactly as
`benchmarks/dreambooth.py` does (same prompts, same seeds, same columns).

    python -m benchmarks.adapters [--adapters lora,locon,dora,lokr,loha] [--seeds 4] [--steps 0]

File sizes are the run's own exports: diffusers' `pytorch_lora_weights.safetensors` (LoRA, LoCon, DoRA) and the
kohya / LyCORIS file for A1111 and ComfyUI (every type). Peak memory at Stable Diffusion 1.5's size is
`python -m benchmarks.memory --only lora+ckpt,locon+ckpt,dora+ckpt,lokr+ckpt,loha+ckpt`.
"""
from __future__ import annotations

from benchmarks import common  # first: sets OMP_WAIT_POLICY before torch loads

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.dreambooth import _fmt, score
from studio.engine import Studio
from studio.runs import LORA_FILE, RunFolder
from studio.training.trainable import ADAPTERS


def file_sizes(run_dir: Path) -> tuple[str, str]:
    """(diffusers file, kohya file) sizes in KiB, '-' where the type has no such file."""
    output = RunFolder(run_dir).output
    diffusers = output / LORA_FILE
    kohya = [p for p in output.glob("*.safetensors") if p.name != LORA_FILE]
    kib = lambda p: f"{p.stat().st_size / 1024:.0f} KiB"
    return (kib(diffusers) if diffusers.exists() else "-"), (kib(kohya[0]) if kohya else "-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", default=",".join(ADAPTERS))
    parser.add_argument("--seeds", type=int, default=4, help="generations per subject prompt")
    parser.add_argument("--steps", type=int, default=0, help="training steps (0 = the preset's)")
    parser.add_argument("--inference-steps", type=int, default=20)
    parser.add_argument("--base-model", default=str(common.BUILTIN))
    args = parser.parse_args()
    common.header("Adapter types on the built-in model: demo-lora with each adapter")
    seeds = list(range(args.seeds))
    rows = []
    with tempfile.TemporaryDirectory() as home:
        studio = Studio(Path(home), base_model=args.base_model)
        _, _, demo_overrides = studio.demo_settings()
        for adapter in args.adapters.split(","):
            settings = {**demo_overrides, "adapter": adapter, **({"max_steps": args.steps} if args.steps else {})}
            run_dir = Path(home) / adapter
            tic = time.perf_counter()
            # no scorecard: the table compares what each type learns by its last step, not the pick's choice
            outcome = studio.train_folder(common.DEMO, run_dir, ["demo-lora"], {**settings, "score_checkpoints": False})
            minutes = (time.perf_counter() - tic) / 60
            if outcome.status != "finished":
                rows.append([adapter, outcome.status, *["-"] * 8])
                continue
            measured = _fmt(score(studio, str(run_dir), seeds, args.inference_steps))
            rows.append([adapter, f"{minutes:.1f} min", *measured, *file_sizes(run_dir)])
            print(f"- {adapter}: " + ", ".join(map(str, rows[-1][1:])), flush=True)
    print()
    common.table(["adapter", "training", "subject fidelity ↑", "prompt fidelity ↑", "(small / recoloured)",
                  "bare prompt ↑", "drift (PRES) ↓", "star colours ↑", "diffusers file", "kohya file"], rows)
    print(f"Generations per model: {args.seeds} per subject prompt; training time includes class images (cached "
          "after the first type), previews and export.")


if __name__ == "__main__":
    main()
