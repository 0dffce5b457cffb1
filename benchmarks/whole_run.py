"""Wall time from the command to a finished LoRA: the studio's CLI vs diffusers' own DreamBooth LoRA script.

    python -m benchmarks.whole_run --reference /tmp/reference/train_dreambooth_lora.py [--repeats 3] [--steps 60]
        [--photos 4] [--resolution 128] [--skip-repeat-home]

Each run is a fresh process, timed from just before it starts to its exit (the exported LoRA on disk):
- studio, first run: `python -m studio train ... --preset object-lora` with a fresh `--home` (no caches);
- studio, repeat run: the same command again on the first run's home: a user's second run, where the studio
  reuses the base model's cached previews and scorecard pictures;
- ref-a: diffusers' `examples/dreambooth/train_dreambooth_lora.py` at its own defaults, no validation images;
- ref-b: the reference drawing as many validation pictures, in as many rounds, as the studio drew previews
  (read from the studio's `Preview` events; the reference always draws one last round after saving).
Same data and settings for all: the first `--photos` demo photos (copied to a temp folder: the reference trains
on every file in its folder, so it gets the images only; the studio also gets their .txt captions), the built-in
model at `--resolution` px, `--steps` steps, batch 1, learning rate 1e-4, LoRA rank 8 (alpha 8), seed 0, no prior
preservation. The studio runs its `object-lora` preset at those values, except `adapter=lora`: the preset trains a
LoCon (attention + convolutions), the reference an attention-only LoRA (to_q/to_k/to_v/to_out.0), so the studio
is set to the same attention-only LoRA. Everything else is each side's default: the studio still draws its
previews and scores the base model and its checkpoints, which is what its time to a LoRA includes.
Runs alternate (studio first, ref-a, ref-b, studio repeat) `--repeats` times, so machine noise hits all alike;
the tables give medians. The studio's time is split into phases from the timestamps of its events.jsonl; the
reference's from its own log lines (tqdm and logging output), timestamped as the parent reads them.

The reference script is not part of this repository. Get it at the tag matching the installed diffusers:
    https://github.com/huggingface/diffusers/blob/v<diffusers version>/examples/dreambooth/train_dreambooth_lora.py
and pass its path with --reference. Measured first with the version at diffusers commit 80628708190f
(`check_min_version("0.31.0.dev0")`, peft LoRA on the UNet's attention) against the installed diffusers 0.42.1;
the header prints the script's minimum version and SHA-256 so each table says which one it measured.
The script imports torchvision for four image transforms; torchvision's wheels would replace this project's
CPU torch, so `benchmarks/reference_shim/torchvision` (PIL + numpy + torch) stands in for it, on PYTHONPATH for
the reference's process only. Tensorboard, the script's default `--report_to`, is not installed here: accelerate
drops that tracker silently, so the reference writes no event files (a little faster than a user's setup).
"""
from __future__ import annotations

from benchmarks import common  # first: sets OMP_WAIT_POLICY (inherited by both subprocesses) before torch loads

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

SHIM = Path(__file__).resolve().parent / "reference_shim"
LEARNING_RATE, RANK, BATCH, SEED = 1e-4, 8, 1, 0
INSTANCE_PROMPT = f"a photo of {common.IDENTIFIER} {common.CLASS_NOUN}"


def env(**extra) -> dict:
    e = {**os.environ, "HF_HUB_OFFLINE": "1", **extra}
    e.pop("STUDIO_HOME", None)  # --home is passed explicitly
    return e


def prepare_photos(root: Path, count: int) -> tuple[Path, Path]:
    """(studio folder: images + captions, reference folder: images only)."""
    images = sorted(p for p in common.DEMO.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))[:count]
    studio_dir, ref_dir = root / "photos-studio", root / "photos-reference"
    for d in (studio_dir, ref_dir):
        d.mkdir(parents=True)
    for img in images:
        shutil.copy2(img, studio_dir / img.name)
        shutil.copy2(img, ref_dir / img.name)
        if img.with_suffix(".txt").exists():
            shutil.copy2(img.with_suffix(".txt"), studio_dir / img.with_suffix(".txt").name)
    return studio_dir, ref_dir


# ---------------------------------------------------------------------------------------------------- studio

def studio_command(photos: Path, out: Path, home: Path, steps: int, resolution: int, extra=()) -> list[str]:
    return [*_studio_base(photos, out, home, steps, resolution), *(a for kv in extra for a in ("--set", kv))]


def _studio_base(photos: Path, out: Path, home: Path, steps: int, resolution: int) -> list[str]:
    return [sys.executable, "-m", "studio", "train", "--home", str(home), "--images", str(photos),
            "--identifier", common.IDENTIFIER, "--class-noun", common.CLASS_NOUN, "--preset", "object-lora",
            "--steps", str(steps), "--no-prior", "--resolution", str(resolution), "--output", str(out),
            "--set", f"learning_rate={LEARNING_RATE}", "--set", f"lora_rank={RANK}", "--set", f"lora_alpha={RANK}",
            "--set", f"batch_size={BATCH}", "--set", "adapter=lora", "--set", f"seed={SEED}"]


# Where the gap before an event goes: by the event's own kind, else by the phase the run is in.
BY_KIND = {"step": "steps", "preview": "previews", "score": "scoring", "checkpoint": "export", "finished": "export"}
BY_PHASE = {"loading": "load", "class_images": "class images", "caching": "caching", "training": "other (in-loop)",
            "saving": "export"}
STUDIO_PHASES = ["interpreter start + imports", "load", "class images", "caching", "steps", "previews", "scoring",
                 "export", "other (in-loop)", "process exit"]


def studio_phases(events: list[dict], started: float, ended: float) -> dict[str, float]:
    """Seconds per phase. Each gap between consecutive events goes to what the later event reports (a step, a
    preview, a score, the export) or, for phase/notice/bookkeeping events, to the phase the run was in."""
    out = dict.fromkeys(STUDIO_PHASES, 0.0)
    out["interpreter start + imports"] = events[0]["time"] - started
    phase = "loading"
    for a, b in zip(events, events[1:]):
        gap = b["time"] - a["time"]
        out[BY_KIND.get(b["kind"]) or BY_PHASE.get(phase, "other (in-loop)")] += gap
        if b["kind"] == "phase":
            phase = b.get("name", phase)
    out["process exit"] = ended - events[-1]["time"]  # after `finished`: closing files, interpreter teardown
    return out


def run_studio(cmd: list[str], out: Path, log: Path) -> dict:
    started = time.time()  # wall clock: the events' `time` is time.time() too
    with open(log, "wb") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env(), cwd=common.REPO).returncode
    ended = time.time()
    if rc != 0:
        sys.exit(f"studio run failed (exit {rc}); its output: {log}\n" + log.read_text(errors="replace")[-3000:])
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines() if line.strip()]
    previews = [e for e in events if e["kind"] == "preview"]
    assert (out / "output" / "pytorch_lora_weights.safetensors").exists(), "no exported LoRA"
    return {"wall": ended - started, "phases": studio_phases(events, started, ended),
            "preview_rounds": len(previews), "preview_images": sum(len(e.get("images", ())) for e in previews),
            "preview_steps": json.loads((out / "config.json").read_text()).get("config", {}).get("preview_steps")}


# ------------------------------------------------------------------------------------------------- reference

def reference_command(script: Path, photos: Path, out: Path, steps: int, resolution: int,
                      validation: tuple[int, int] | None) -> list[str]:
    cmd = [sys.executable, "-u", str(script), "--pretrained_model_name_or_path", str(common.BUILTIN),
           "--instance_data_dir", str(photos), "--instance_prompt", INSTANCE_PROMPT, "--output_dir", str(out),
           "--resolution", str(resolution), "--train_batch_size", str(BATCH), "--max_train_steps", str(steps),
           "--learning_rate", str(LEARNING_RATE), "--rank", str(RANK), "--seed", str(SEED)]
    if validation is not None:
        per_round, every = validation
        cmd += ["--validation_prompt", INSTANCE_PROMPT, "--num_validation_images", str(per_round),
                "--validation_epochs", str(every)]
    return cmd


def validation_schedule(rounds: int, images: int, photos: int, steps: int) -> tuple[int, int, int]:
    """(images per round, validation_epochs, rounds the reference will draw) closest to the studio's previews.
    The reference validates after every epoch e with e % validation_epochs == 0 (epoch 0 always) and once more
    after saving: ceil(epochs / validation_epochs) + 1 rounds, so one round is the fewest it can draw."""
    epochs = math.ceil(steps / math.ceil(photos / BATCH))
    want = max(rounds - 1, 1)
    every = min(range(1, epochs + 1), key=lambda v: (abs(math.ceil(epochs / v) - want), -v))
    got = math.ceil(epochs / every) + 1
    return max(1, round(images / max(rounds, 1))), every, got


STEP_RE = re.compile(r"Steps:.*?\|\s*(\d+)/(\d+)")


def reference_phases(lines: list[tuple[float, str]], started: float, ended: float) -> dict[str, float] | None:
    """Phases from the reference's timestamped output fragments, or None if its markers are missing.
    start-up + load: to its '***** Running training *****' log line; steps: from there to the last step's
    progress update, less validation; validation in training: each gap between two progress updates that holds
    a validation pipeline's loading, less one median step; save: to 'Model weights saved'; after save: the
    final pipeline reload, LoRA load and (ref-b) the last validation round, to the exit."""
    def first(pattern: str, after: float = 0.0) -> float | None:
        return next((t for t, s in lines if t >= after and pattern in s), None)

    t_train, t_saved = first("***** Running training *****"), first("Model weights saved")
    steps = [(t, int(m.group(1))) for t, s in lines if (m := STEP_RE.search(s))]
    if t_train is None or t_saved is None or not steps:
        return None
    updates = []  # (time, step) at each step's first progress update
    for t, k in steps:
        if not updates or k > updates[-1][1]:
            updates.append((t, k))
    gaps = sorted(b[0] - a[0] for a, b in zip(updates, updates[1:]))
    step_gap = gaps[len(gaps) // 2] if gaps else 0.0
    t_last = updates[-1][0]
    validation = 0.0
    for (ta, _), (tb, _) in zip(updates, updates[1:]):
        if any(ta < t < tb and "Loading pipeline components" in s for t, s in lines):
            validation += max(0.0, tb - ta - step_gap)
    return {"start-up + load": t_train - started, "steps": (t_last - t_train) - validation,
            "validation in training": validation, "save": t_saved - t_last, "after save (reload, final validation)":
            ended - t_saved}


REF_PHASES = ["start-up + load", "steps", "validation in training", "save", "after save (reload, final validation)"]


def run_reference(cmd: list[str], out: Path, log: Path) -> dict:
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=out.parent,
                            env=env(PYTHONPATH=str(SHIM)))  # the torchvision stand-in, for this process only
    lines: list[tuple[float, str]] = []
    pending = b""
    with open(log, "wb") as f:
        # read1: whatever is there now; tqdm ends its updates with '\r', so split on both '\r' and '\n' and
        # stamp each fragment when it arrives
        while chunk := proc.stdout.read1(65536):
            now = time.time()
            f.write(chunk)
            parts = re.split(rb"[\r\n]", pending + chunk)
            pending = parts.pop()
            lines += [(now, p.decode(errors="replace")) for p in parts if p.strip()]
    rc = proc.wait()
    ended = time.time()
    if pending.strip():
        lines.append((ended, pending.decode(errors="replace")))
    if rc != 0:
        sys.exit(f"reference run failed (exit {rc}); its output: {log}\n" + log.read_text(errors="replace")[-3000:])
    assert (out / "pytorch_lora_weights.safetensors").exists(), "no exported LoRA"
    validations = sum("Running validation" in s for _, s in lines)
    return {"wall": ended - started, "phases": reference_phases(lines, started, ended), "validation_rounds": validations}


def script_facts(script: Path) -> str:
    text = script.read_text()
    m = re.search(r'check_min_version\("([^"]+)"\)', text)
    digest = hashlib.sha256(script.read_bytes()).hexdigest()[:12]
    return f"check_min_version {m.group(1) if m else '?'}, sha256 {digest}"


# ------------------------------------------------------------------------------------------------------ main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reference", required=True, type=Path,
                    help="path to diffusers' examples/dreambooth/train_dreambooth_lora.py (see the module docstring)")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of studio, ref-a, ref-b, studio repeat")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--photos", type=int, default=4, help="the first N demo photos")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--skip-repeat-home", action="store_true", help="no 'studio, repeat run' rows")
    ap.add_argument("--studio-set", action="append", default=[], metavar="KEY=VALUE",
                    help="one more setting for the studio's runs (e.g. score_checkpoints=false), repeatable")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (runs, logs) for a look afterwards")
    args = ap.parse_args()
    script = args.reference.resolve()
    if not script.is_file():
        sys.exit(f"--reference {script}: no such file (see `python -m benchmarks.whole_run --help`)")
    if not (common.BUILTIN / "model_index.json").exists():
        sys.exit("the built-in model is not exported (assets/builtin-model)")
    import diffusers

    tmp = common.temp_root("whole-run")
    studio_photos, ref_photos = prepare_photos(tmp, args.photos)
    common.header("Whole run: command to exported LoRA, studio CLI vs diffusers' train_dreambooth_lora.py")
    print(f"- reference: {script.name} ({script_facts(script)}), run with {Path(sys.executable).name} directly "
          f"(no `accelerate launch`), torchvision stand-in from benchmarks/reference_shim; diffusers "
          f"{diffusers.__version__}")
    print(f"- same for all: {args.photos} demo photos, built-in model at {args.resolution} px, {args.steps} steps, "
          f"batch {BATCH}, lr {LEARNING_RATE:g}, LoRA rank {RANK} (alpha {RANK}) on the UNet's attention, seed {SEED}, "
          "no prior preservation")
    print("- studio: preset object-lora with adapter=lora (the preset's LoCon also trains the convolutions; the "
          "reference cannot), its own previews and scorecard; ref-a: the reference's defaults (no validation); "
          f"ref-b: the reference drawing the studio's number of preview pictures; {args.repeats} alternated rounds"
          + (f"; studio also --set {' --set '.join(args.studio_set)}" if args.studio_set else ""))
    print(f"- scratch folder: {tmp}\n")

    results: dict[str, list[dict]] = {k: [] for k in ("studio first", "studio repeat", "ref-a", "ref-b")}
    schedule = None
    for r in range(args.repeats):
        home = tmp / f"home-{r}"
        cmd = studio_command(studio_photos, tmp / f"studio-{r}-first", home, args.steps, args.resolution, args.studio_set)
        results["studio first"].append(run_studio(cmd, tmp / f"studio-{r}-first", tmp / f"studio-{r}-first.log"))
        if schedule is None:  # the studio's previews, as its first run drew them: ref-b matches these
            first = results["studio first"][0]
            schedule = validation_schedule(first["preview_rounds"], first["preview_images"], args.photos, args.steps)
        results["ref-a"].append(run_reference(
            reference_command(script, ref_photos, tmp / f"ref-a-{r}", args.steps, args.resolution, None),
            tmp / f"ref-a-{r}", tmp / f"ref-a-{r}.log"))
        results["ref-b"].append(run_reference(
            reference_command(script, ref_photos, tmp / f"ref-b-{r}", args.steps, args.resolution, schedule[:2]),
            tmp / f"ref-b-{r}", tmp / f"ref-b-{r}.log"))
        if not args.skip_repeat_home:  # the same home again: a user's second run with the studio
            cmd = studio_command(studio_photos, tmp / f"studio-{r}-repeat", home, args.steps, args.resolution,
                                 args.studio_set)
            results["studio repeat"].append(run_studio(cmd, tmp / f"studio-{r}-repeat", tmp / f"studio-{r}-repeat.log"))
        print(f"round {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]['wall']:.1f} s" for k, v in results.items() if v),
              file=sys.stderr)

    per_round, every, ref_rounds = schedule
    first = results["studio first"][0]
    print(f"- studio previews (first run): {first['preview_rounds']} rounds, {first['preview_images']} pictures at "
          f"{first['preview_steps']} sampling steps; ref-b: --num_validation_images {per_round} --validation_epochs "
          f"{every} = {ref_rounds} rounds, {per_round * ref_rounds} pictures (its in-training rounds sample 50 steps, "
          "the pipeline's default; its last round 25; the script has no option for either)")
    counts = sorted({(x["preview_rounds"], x["preview_images"]) for v in ("studio first", "studio repeat") for x in results[v]})
    print(f"- studio preview (rounds, pictures) seen across all studio runs: {counts}; reference validation rounds "
          f"seen in ref-b: {sorted({x['validation_rounds'] for x in results['ref-b']})}\n")

    med = {k: common.median([x["wall"] for x in v]) for k, v in results.items() if v}
    rows = [(k, med[k], min(x["wall"] for x in v), max(x["wall"] for x in v), len(v)) for k, v in results.items() if v]
    common.table(["run", "median wall s (start to exit)", "min s", "max s", "runs"], rows)

    ratio_rows = []
    for k in ("studio first", "studio repeat"):
        if k in med:
            a, b = med[k] / med["ref-a"], med[k] / med["ref-b"]
            ratio_rows.append((k, f"{a:.2f} {'ok' if a <= 1.0 else 'MISSED'}", f"{b:.2f} {'ok' if b <= 0.25 else 'MISSED'}"))
    common.table(["studio run", "studio / ref-a (target <= 1.0)", "studio / ref-b (target <= 0.25)"], ratio_rows)

    print("Studio phases (median seconds; from events.jsonl timestamps, the gap before each event goes to what it "
          "reports):\n")
    kinds = [k for k in ("studio first", "studio repeat") if results[k]]
    rows = [(p, *(common.median([x["phases"][p] for x in results[k]]) for k in kinds)) for p in STUDIO_PHASES]
    rows.append(("total (median wall)", *(med[k] for k in kinds)))
    common.table(["phase", *kinds], rows)

    print("Reference phases (median seconds; from its output lines, timestamped as they arrive):\n")
    refs = [k for k in ("ref-a", "ref-b") if all(x["phases"] for x in results[k])]
    if refs:
        rows = [(p, *(common.median([x["phases"][p] for x in results[k]]) for k in refs)) for p in REF_PHASES]
        rows.append(("total (median wall)", *(med[k] for k in refs)))
        common.table(["phase", *refs], rows)
    else:
        print("(its log markers were not found: totals only)\n")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
