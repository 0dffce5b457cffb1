"""Textual inversion against DreamBooth on the built-in world (the DreamBooth paper's Table 1), with LoRA and pivotal tuning.

Each method trains the demo subject (the red star with the cyan band, `assets/demo-subject`) through the studio's
own command line, one fresh process per method, timed from the command's start to its exit (the output files
written and read back). All runs share one scratch home, so the 50 class images drawn by the first run with prior
preservation are reused by the later ones: the "class images" column says what each run spent on them. Then the
benchmark's judge reads each model's generations exactly as `benchmarks/dreambooth.py` does (its `score`: same
prompts, seeds and columns as the README's DreamBooth and adapter tables); for the methods that learn a new token the
prompts name it, "<sks>", where the others say "sks".

Rows (`--methods`, in this order by default):
  full               DreamBooth as the demo trains it: `demo-full` (every UNet weight, lr 1e-4, 600 steps at
                     batch 2, prior preservation)
  lora               `demo-lora` (LoCon rank 8 on attention and the ResNet convolutions, lr 1e-3, 400 steps at
                     batch 2, prior preservation)
  textual_inversion  `demo-full` with method = "textual_inversion": a new token <sks> initialised from "star",
                     embedding lr `--ti-lr` (5e-3) for `--ti-steps` (2000) steps at batch 2; one row per
                     `--ti-vectors` count (default 1 and 4 vectors). Prior preservation off: the UNet and text encoder
                     are frozen and the class prompt does not contain the token, so the prior loss has no gradient
                     to give and would only draw 50 class images and double each step's batch. For the same reason
                     its class prompts draw exactly the base model's pictures: its drift is the base model's.
  pivotal            `demo-lora` with method = "pivotal": the LoCon and the new token trained together (LoRA lr 1e-3,
                     embedding lr `--pivotal-embedding-lr`), 400 steps at batch 2, prior preservation on

    python -m benchmarks.methods [--methods full,lora,textual_inversion,pivotal] [--seeds 4] [--out FILE.md|.json]

The scorecard is off in every run (`score_checkpoints = false`, as in `benchmarks.adapters`): the table compares
what each method learned by its last step, and the run's time is training, previews and export without the
scorecard's pictures. Output size: the files a user downloads from `output/` for diffusers (full: the `model/`
folder, offered as one zip; LoRA: `pytorch_lora_weights.safetensors`; textual inversion: `learned_embeds.safetensors`;
pivotal: both of the last two) and for A1111 / ComfyUI (the kohya LoRA and/or the A1111 embedding).
"""
from __future__ import annotations

from benchmarks import common  # first: sets OMP_WAIT_POLICY and HF_HUB_OFFLINE before torch loads

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.dreambooth import _fmt, score
from studio.engine import Studio
from studio.runs import EMBEDDINGS_FILE, FULL_MODEL_DIR, LORA_FILE

METHOD_ORDER = ("full", "lora", "textual_inversion", "pivotal")
CARD_FILES = {"README.md", "samples.png"}  # the model card and its sample grid: not weights


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    preset: str
    settings: dict  # --set values on top of the preset
    steps: int | None  # --steps (None: the preset's)
    token: bool  # prompts name the learned token "<sks>"
    describe: str  # for the table's notes

    def command(self, home: Path, output: Path) -> list[str]:
        cmd = [sys.executable, "-m", "studio", "train", "--demo", "--home", str(home), "--output", str(output),
               "--json", "--preset", self.preset]
        if self.steps:
            cmd += ["--steps", str(self.steps)]
        for key, value in {**self.settings, "score_checkpoints": False}.items():
            cmd += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
        return cmd


def methods(args) -> dict[str, list[Method]]:
    """Each `--methods` name -> its rows (textual inversion: one per `--ti-vectors` count)."""
    counts = [int(n) for n in str(args.ti_vectors).split(",") if n.strip()]

    def ti(n: int) -> Method:
        settings = {"method": "textual_inversion", "with_prior_preservation": False,
                    "embedding_learning_rate": args.ti_lr, **({"num_vectors": n} if n != 1 else {})}
        label = "textual_inversion" if len(counts) == 1 else f"textual_inversion ({n} vector{'s' if n > 1 else ''})"
        return Method(label, "demo-full", settings, args.ti_steps, True,
                      f"`demo-full` + method = textual_inversion: new token <sks>, {n} vector{'s' if n > 1 else ''} "
                      f"of 64 initialised from \"star\", embedding lr {args.ti_lr:g} (AdamW, no weight decay on the "
                      f"vectors), {args.ti_steps} steps at batch 2, prior preservation off (frozen model: the class "
                      "prompt has nothing to train)")

    pivotal = {"method": "pivotal", "embedding_learning_rate": args.pivotal_embedding_lr}
    return {
        "full": [Method("full", "demo-full", {}, None, False,
                        "`demo-full`: every UNet weight (1.7 M), lr 1e-4, 600 steps at batch 2, prior preservation")],
        "lora": [Method("lora", "demo-lora", {}, None, False,
                        "`demo-lora`: LoCon rank 8 (attention + ResNet convolutions), lr 1e-3, 400 steps at batch 2, "
                        "prior preservation")],
        "textual_inversion": [ti(n) for n in counts],
        "pivotal": [Method(
            "pivotal", "demo-lora", pivotal, None, True,
            f"`demo-lora` + method = pivotal: LoCon rank 8 at lr 1e-3 and new token <sks> (1 vector) at lr "
            f"{args.pivotal_embedding_lr:g}, trained together in one phase, 400 steps at batch 2, prior preservation")],
    }


class TokenPrompts:
    """A Studio whose `generate` names the learned token: "sks" -> "<sks>" as a whole word, so
    `benchmarks.dreambooth.score` reads a textual-inversion or pivotal model with its own prompts unchanged."""

    def __init__(self, studio: Studio, token: str) -> None:
        self.studio, self.token = studio, token
        self.pattern = re.compile(rf"(?<![<\w]){re.escape(common.IDENTIFIER)}(?![>\w])")

    def generate(self, user, model, settings):
        return self.studio.generate(user, model, dataclasses.replace(settings, prompt=self.pattern.sub(self.token, settings.prompt)))


# ----------------------------------------------------------------------------------------------- sizes and times

def size_text(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 ** 2:
        return f"{n / 1024:.1f} KiB" if n < 10 * 1024 else f"{n / 1024:.0f} KiB"
    return f"{n / 1024 ** 2:.1f} MiB"


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def output_sizes(output: Path) -> dict:
    """Bytes of what a user downloads: for diffusers, and for A1111 / ComfyUI (None where the run has none)."""
    diffusers = 0
    names = []
    if (output / FULL_MODEL_DIR).is_dir():
        diffusers += folder_bytes(output / FULL_MODEL_DIR)
        names.append(f"{FULL_MODEL_DIR}/")
    for name in (LORA_FILE, EMBEDDINGS_FILE):
        if (output / name).is_file():
            diffusers += (output / name).stat().st_size
            names.append(name)
    other = [p for p in output.glob("*.safetensors") if p.name not in (LORA_FILE, EMBEDDINGS_FILE)]
    return {"diffusers": diffusers or None, "diffusers_files": names,
            "a1111": sum(p.stat().st_size for p in other) or None, "a1111_files": sorted(p.name for p in other),
            "output_total": sum(p.stat().st_size for p in output.rglob("*") if p.is_file() and "last" not in p.parts)}


def run_times(events: list[dict], started: float, ended: float) -> dict:
    """Seconds of the whole run (command to exit), of its class images and of its training steps (the loop's own
    per-step times: forward, backward, update; previews left out)."""
    class_images = 0.0
    phases = [e for e in events if e["kind"] == "phase"]
    for a, b in zip(phases, phases[1:]):  # from its phase event to the next one: drawn, or read from the cache
        if a.get("name") == "class_images":
            class_images += b["time"] - a["time"]
    steps = [e for e in events if e["kind"] == "step"]
    drawn = [e for e in events if e["kind"] == "class_images"]
    return {"wall": ended - started, "class_images": class_images,
            "class_images_drawn": (drawn[-1]["total"] - drawn[-1].get("reused", 0)) if drawn else 0,
            "steps": len(steps), "steps_seconds": sum(e.get("seconds", 0.0) for e in steps),
            "previews": sum(1 for e in events if e["kind"] == "preview")}


def train(method: Method, home: Path, output: Path, log: Path) -> dict:
    env = {**os.environ}
    env.pop("STUDIO_HOME", None)  # --home is given
    started = time.time()  # wall clock, as the events' `time`
    with open(log, "wb") as fh:
        rc = subprocess.run(method.command(home, output), stdout=fh, stderr=subprocess.STDOUT, env=env,
                            cwd=common.REPO).returncode
    ended = time.time()
    events = []
    if (output / "events.jsonl").exists():
        events = [json.loads(line) for line in (output / "events.jsonl").read_text().splitlines() if line.strip()]
    finished = rc == 0 and any(e["kind"] == "finished" for e in events)
    return {"rc": rc, "finished": finished, **(run_times(events, started, ended) if events else {"wall": ended - started})}


class Tee:
    """stdout, with a copy of everything printed (the markdown --out writes)."""

    def __init__(self, stream) -> None:
        self.stream, self.parts = stream, []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def text(self) -> str:
        return "".join(self.parts)


# ------------------------------------------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHOD_ORDER), help=f"any of {', '.join(METHOD_ORDER)}")
    parser.add_argument("--seeds", type=int, default=4, help="generations per subject prompt (as benchmarks.dreambooth)")
    parser.add_argument("--inference-steps", type=int, default=20)
    parser.add_argument("--ti-steps", type=int, default=2000, help="textual inversion's training steps")
    parser.add_argument("--ti-lr", type=float, default=5e-3, help="textual inversion's embedding learning rate")
    parser.add_argument("--ti-vectors", default="1,4",
                        help="textual inversion's vectors per token; several (1,4) give one row each")
    parser.add_argument("--pivotal-embedding-lr", type=float, default=5e-3)
    parser.add_argument("--no-base", action="store_true", help="leave out the untouched base model's row")
    parser.add_argument("--out", type=Path, help="also write the results: .json (numbers) or any other name (markdown)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (runs, logs) and say where")
    args = parser.parse_args()
    chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
    table = methods(args)
    unknown = [m for m in chosen if m not in table]
    runs = [method for name in chosen if name in table for method in table[name]]
    if unknown:
        sys.exit(f"--methods: unknown {', '.join(unknown)}; use any of {', '.join(METHOD_ORDER)}")
    if not (common.BUILTIN / "model_index.json").exists():
        sys.exit("the built-in model is not exported (assets/builtin-model)")

    copy = Tee(sys.stdout)
    sys.stdout = copy  # the header and the table, for --out
    say = lambda text="": print(text, flush=True)
    common.header("Methods on the built-in world: textual inversion against DreamBooth (the paper's Table 1), "
                  "with LoRA and pivotal tuning")
    tmp = common.temp_root("methods")
    home = tmp / "home"
    seeds = list(range(args.seeds))
    studio = Studio(home, base_model=str(common.BUILTIN))
    rows, results = [], []
    tic_all = time.perf_counter()
    if not args.no_base:
        measured = score(studio, "base", seeds, args.inference_steps)
        results.append({"method": "base", "scores": measured})
        rows.append(["base model (no training)", *_fmt(measured), "-", "-", "-", "-", "-"])
        print("- base: " + ", ".join(rows[-1][1:7]), file=sys.stderr, flush=True)
    for method in runs:
        name = method.name
        slug = re.sub(r"\W+", "-", name).strip("-")
        run_dir = tmp / "runs" / slug
        timing = train(method, home, run_dir, tmp / f"{slug}.log")
        result = {"method": name, "preset": method.preset, "settings": method.settings, "steps": method.steps,
                  "command": " ".join(method.command(Path("HOME"), Path("RUN"))[1:]), "timing": timing}
        if not timing["finished"]:
            tail = (tmp / f"{slug}.log").read_text(errors="replace")[-1500:]
            print(f"- {name}: the run did not finish (exit {timing['rc']}); its log ends:\n{tail}", file=sys.stderr)
            rows.append([name, f"failed (exit {timing['rc']})", *["-"] * 10])
            results.append(result)
            continue
        model = TokenPrompts(studio, "<sks>") if method.token else studio
        measured = score(model, str(run_dir), seeds, args.inference_steps)
        sizes = output_sizes(run_dir / "output")
        result.update(scores=measured, sizes=sizes)
        results.append(result)
        steps_cell = (f"{timing['steps_seconds']:.0f} s ({timing['steps']} × {timing['steps_seconds'] / timing['steps']:.2f} s)"
                      if timing.get("steps") else "-")
        class_cell = (f"{timing['class_images']:.0f} s ({timing['class_images_drawn']} drawn)"
                      if timing["class_images_drawn"] else (f"{timing['class_images']:.0f} s (cached)"
                                                            if timing["class_images"] else "- (no prior)"))
        rows.append([name, *_fmt(measured),
                     size_text(sizes["diffusers"]) if sizes["diffusers"] else "-",
                     size_text(sizes["a1111"]) if sizes["a1111"] else "-",
                     f"{timing['wall']:.0f} s", class_cell, steps_cell])
        print(f"- {name}: " + " | ".join(map(str, rows[-1][1:])), file=sys.stderr, flush=True)

    say("Settings per row (each run: `python -m studio train --demo --preset P [--steps N] --set ...`, scorecard off):")
    say()
    for method in runs:
        say(f"- **{method.name}**: {method.describe}")
    say()
    headers = ["method", "subject fidelity ↑", "prompt fidelity ↑", "(small / recoloured)", "bare prompt ↑",
               "drift (PRES) ↓", "star colours ↑", "download: diffusers", "download: A1111 / ComfyUI",
               "whole run (command to files)", "class images (in the run)", "training steps"]
    say("| " + " | ".join(headers) + " |")
    say("|" + "|".join("---" for _ in headers) + "|")
    for row in rows:
        say("| " + " | ".join(map(str, row)) + " |")
    say()
    say(f"Generations per model: {args.seeds} per subject prompt, {args.inference_steps} sampling steps (the judge and "
        "prompts of `benchmarks.dreambooth`; drift reads 3 × that many plain \"a photo of a star\" / \"a star\" "
        "pictures). Token methods are prompted with \"<sks>\". Downloads: full = the `model/` folder (the whole "
        "pipeline: UNet, text encoder, VAE; offered as one zip); LoRA = `pytorch_lora_weights.safetensors` and the "
        "kohya file; textual inversion = `learned_embeds.safetensors` and the A1111 embedding (64 floats per vector on "
        "this model; 768 on SD 1.x, about 3 KiB); pivotal = the LoRA and the embedding. Whole run: the CLI's process "
        "from start to exit (imports, model load, class images, previews, export and read-back); training steps: the "
        "sum of the loop's own per-step times in events.jsonl. Class images are drawn once per home and reused; "
        "textual inversion draws none (prior preservation off).")
    say(f"\nBenchmark wall time: {(time.perf_counter() - tic_all) / 60:.1f} min.")
    if args.out:
        if args.out.suffix == ".json":
            args.out.write_text(json.dumps({"seeds": args.seeds, "inference_steps": args.inference_steps,
                                            "results": results, "markdown": copy.text()}, indent=2, default=str))
        else:
            args.out.write_text(copy.text())
        print(f"written: {args.out}", file=sys.stderr)
    if args.keep:
        print(f"scratch folder kept: {tmp}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
