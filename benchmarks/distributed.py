"""One run on one process and on two (`torchrun --nproc_per_node 2 -m studio train`), side by side.

    python -m benchmarks.distributed [--steps 100] [--repeats 1]

Both train the demo subject on the built-in model with the same settings and global batch (`object-lora`, batch 2,
prior preservation with 4 class images, seed 0; previews and scoring left at their defaults), each on a fresh home.
Printed per run: wall time from the command to its exit, the training phase alone (first to last step, from
events.jsonl), and the largest difference between the two runs' final LoRA weights. On a CPU, two processes share
the machine's cores, so the times say what the split costs (start-up twice, an all-reduce a step), not what a
second GPU gains; the weights say that the split changes nothing but float summation order.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "assets" / "demo-subject"


def _command(steps: int, home: Path, output: Path) -> list[str]:
    return ["-m", "studio", "train", "--home", str(home), "--images", str(PHOTOS), "--identifier", "sks",
            "--class-noun", "star", "--preset", "object-lora", "--steps", str(steps), "--num-class-images", "4",
            "--set", "batch_size=2", "--set", "seed=0", "--output", str(output), "--json"]


def _run(processes: int, steps: int, work: Path) -> dict:
    home, output = work / f"home-{processes}", work / f"run-{processes}"
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
    # the machine's cores, shared: one process gets them all, two get half each (torchrun's default is 1 thread)
    threads = max(1, (os.cpu_count() or 1) // processes)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    tic = time.perf_counter()
    done = subprocess.run([*launcher, *_command(steps, home, output)], env=env, cwd=ROOT, capture_output=True,
                          text=True)
    wall = time.perf_counter() - tic
    if done.returncode != 0:
        raise SystemExit(f"{processes} process(es) failed:\n{done.stderr[-3000:]}")
    events = [json.loads(line) for line in (output / "events.jsonl").read_text().splitlines()]
    steps_at = [e["time"] for e in events if e["kind"] == "step"]
    return {"wall": wall, "training": steps_at[-1] - steps_at[0], "output": output}


def _difference(a: Path, b: Path) -> tuple[float, float]:
    from safetensors.torch import load_file

    x = load_file(str(a / "output" / "pytorch_lora_weights.safetensors"))
    y = load_file(str(b / "output" / "pytorch_lora_weights.safetensors"))
    return max((x[k] - y[k]).abs().max().item() for k in x), max(x[k].abs().max().item() for k in x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(f"{args.steps} steps, global batch 2 (+2 class images), built-in model, {os.cpu_count()} CPU cores")
    print("repeat | processes | wall s | training s | wall ratio | largest weight difference (largest weight)")
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            one, two = _run(1, args.steps, Path(tmp)), _run(2, args.steps, Path(tmp))
            diff, scale = _difference(one["output"], two["output"])
            print(f"{repeat + 1} | 1 | {one['wall']:.1f} | {one['training']:.1f} | 1.00 |")
            print(f"{repeat + 1} | 2 | {two['wall']:.1f} | {two['training']:.1f} | {two['wall'] / one['wall']:.2f} | "
                  f"{diff:.2e} ({scale:.2f})")


if __name__ == "__main__":
    main()
