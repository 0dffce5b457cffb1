"""Model ids a user can draw with: "base", "run:<id>" (a finished run), "run:<id>@<step>" (a checkpoint).

Ids, never paths, cross the wire: each is resolved here inside the user's own
run folders, so a forged id names nothing.
"""
from __future__ import annotations

import json
from pathlib import Path

from studio.inference.pipelines import ModelRef
from studio.workspace import NotFound, check_id

LORA_FILE = "pytorch_lora_weights.safetensors"


def list_models(studio, user: str):
    from studio.engine import ModelChoice
    from studio.training.checkpoint import checkpoint_dirs

    choices = [ModelChoice("base", f"base model ({studio.base_model.label.split('/')[-1]})")]
    for run_id in studio.workspace.run_ids(user):
        run_dir = studio.workspace.run_dir(user, run_id)
        if (run_dir / "output").is_dir():
            choices.append(ModelChoice(f"run:{run_id}", f"{run_id} (final)"))
        for folder in reversed(checkpoint_dirs(run_dir)):
            step = int(folder.name.split("-")[1])
            choices.append(ModelChoice(f"run:{run_id}@{step}", f"{run_id} @ step {step}"))
    return choices


def model_ref(studio, user: str, model_id: str) -> ModelRef:
    if model_id == "base":
        return ModelRef("base:" + studio.base_model.location, "base model", studio.base_model)
    if not isinstance(model_id, str) or not model_id.startswith("run:"):
        if not studio.shared and Path(model_id).exists():  # the local CLI may name run folders and LoRA files
            return path_ref(studio, Path(model_id))
        raise NotFound(f"unknown model {model_id!r}; pick one from the list")
    run_id, _, step = model_id[4:].partition("@")
    run_dir = studio.workspace.run_dir(user, check_id(run_id, "run"))
    return _run_ref(studio, run_dir, step, f"{user}/{run_id}@{step or 'final'}")


def path_ref(studio, path: Path) -> ModelRef:
    """A run folder (its final model) or a LoRA .safetensors file, for the local CLI."""
    path = path.resolve()
    if path.is_file():
        return ModelRef(f"file:{path}", path.stem, studio.base_model, lora_file=path)
    step = ""
    if path.parent.name == "checkpoints":  # a checkpoint folder: run/checkpoints/step-000100
        step, path = str(int(path.name.split("-")[1])), path.parent.parent
    return _run_ref(studio, path, step, f"dir:{path}@{step or 'final'}")


def _run_ref(studio, run_dir: Path, step: str, key: str) -> ModelRef:
    run_id = run_dir.name
    meta_path = run_dir / "run.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
    base = studio.source(meta.get("base_model"))
    if not step:
        output = run_dir / "output"
        if (output / LORA_FILE).exists():
            return ModelRef(key, f"{run_id}", base, lora_file=output / LORA_FILE)
        if (output / "model").is_dir():
            return ModelRef(key, f"{run_id}", base, full_model_dir=output / "model")
        raise NotFound(f"run {run_id} has no finished model yet; pick a checkpoint")
    if not step.isdigit():
        raise NotFound(f"unknown checkpoint step {step!r} in run {run_id}")
    folder = run_dir / "checkpoints" / f"step-{int(step):06d}"
    if not (folder / "state.json").exists():
        raise NotFound(f"run {run_id} has no checkpoint at step {step}")
    label = f"{run_id} @ {step}"
    if (folder / LORA_FILE).exists():
        return ModelRef(key, label, base, lora_file=folder / LORA_FILE)
    return ModelRef(key, label, base, unet_state_file=folder / "trainable.safetensors")
