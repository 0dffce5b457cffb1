"""What every benchmark shares: machine facts, markdown tables, photos and the base model to use.

Import this module before torch: it sets OMP_WAIT_POLICY=PASSIVE (as the pretraining script does),
because on a 2-core machine shared with other jobs OpenMP's busy-waiting makes small ops wait on
descheduled threads, and the numbers would measure the scheduler instead of the code.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download

from studio.logs import quiet_libraries  # noqa: E402  (os, logging, warnings only: torch is not loaded yet)

quiet_libraries()  # the same quiet output as the app and the CLI (no optional-kernel warnings in the tables)

import datetime
import warnings
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

# loading a second LoRA into one UNet is what the PipelineCache means to do
warnings.filterwarnings("ignore", message="Already found a `peft_config`")

REPO = Path(__file__).resolve().parent.parent
BUILTIN = REPO / "assets" / "builtin-model"
DEMO = REPO / "assets" / "demo-subject"
IDENTIFIER, CLASS_NOUN = "sks", "star"  # the demo subject's (studio.world.demo)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def pretraining_running() -> bool:
    """The built-in model's pretraining shares this machine; timings taken beside it are noisier."""
    return subprocess.run(["pgrep", "-f", "studio.world.pretrain"], capture_output=True).returncode == 0


def quiet() -> None:
    """No loading progress bars between the tables."""
    from diffusers.utils import logging

    logging.disable_progress_bar()


def header(title: str) -> None:
    import torch

    quiet()

    print(f"## {title}\n")
    print(f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"- machine: {cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"(threads {torch.get_num_threads()}), python {platform.python_version()}")
    print(f"- command: {' '.join(shlex.quote(a) for a in [Path(sys.executable).name, '-m', module_name(), *sys.argv[1:]])}")
    if pretraining_running():
        print("- NOTE: `studio.world.pretrain` was running at the same time (it uses both cores): "
              "absolute times are inflated and noisy; ratios from interleaved runs are the meaningful figures")
    print()


def module_name() -> str:
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    return spec.name if spec is not None else Path(sys.argv[0]).stem


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    def cell(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for row in rows:
        print("| " + " | ".join(cell(v) for v in row) + " |")
    print()


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def photos_dir() -> Path:
    """The demo subject's shipped pictures: every benchmark trains on the same five photos."""
    return DEMO


def base_model(spec: str | None, tmp: Path) -> tuple[str, str]:
    """(path, description). The built-in model if it is exported; otherwise a random-weight model with the
    built-in's exact architecture (so timings are representative; the pictures are noise), or as a last
    resort the tests' 32-px tiny model."""
    quiet()
    if spec:
        return spec, spec
    if (BUILTIN / "model_index.json").exists():
        return str(BUILTIN), "assets/builtin-model (pretrained)"
    folder = tmp / "base-model"
    if (folder / "model_index.json").exists():
        return str(folder), "random weights, built-in architecture (built-in model not exported yet)"
    try:
        import torch
        from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline
        from transformers import CLIPTokenizer

        from studio.world import pretrain
        from studio.world.tokenizer import write_tokenizer

        torch.manual_seed(0)
        tokenizer = CLIPTokenizer.from_pretrained(write_tokenizer(tmp / "tokenizer"))
        pipe = StableDiffusionPipeline(
            vae=pretrain.make_vae(), text_encoder=pretrain.make_text_encoder(tokenizer), tokenizer=tokenizer,
            unet=pretrain.make_unet(), scheduler=DPMSolverMultistepScheduler(**pretrain.NOISE_SCHEDULE, steps_offset=1),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.save_pretrained(folder, safe_serialization=True)
        return str(folder), "random weights, built-in architecture (built-in model not exported yet)"
    except ImportError:
        sys.path.insert(0, str(REPO))
        from tests.tiny import build_tiny_sd

        build_tiny_sd(folder)
        return str(folder), "tests/tiny.py 32-px random model (built-in model not exported yet)"


def temp_root(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))


def fast_overrides(**extra) -> dict:
    """Settings that keep a studio run short without changing what one training step does."""
    base = {"identifier": IDENTIFIER, "class_noun": CLASS_NOUN, "with_prior_preservation": True,
            "num_class_images": 4, "class_image_steps": 4, "class_image_batch": 4,
            "preview_steps": 4, "preview_seeds": [0], "checkpoint_every": 0, "seed": 0}
    base.update(extra)
    return base
