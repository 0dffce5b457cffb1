"""Model ids a user can draw with: "base", "run:<id>" (a finished run), "run:<id>@<step>" (a checkpoint).

Ids, never paths, cross the wire: each is resolved here inside the user's own
run folders, so a forged id names nothing. The local CLI may also name a run
folder, a checkpoint folder or a LoRA file by path.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from studio.events import Score
from studio.models.catalog import ModelCatalog
from studio.models.sources import ModelSource
from studio.runs import (CHECKPOINT_STATE, CHECKPOINTS, DETAIL_VAE_DIR, EMBEDDINGS_FILE, FULL_MODEL_DIR, LORA_FILE,
                         TRAINABLE_FILE, RunFolder, parse_step, step_name)
from studio.workspace import NotFound, Workspace, check_id

BASE = "base"
RUN_PREFIX = "run:"


def subject_scores(run: RunFolder) -> dict[str, float]:
    """Each scored checkpoint's newest subject fidelity, by checkpoint name (NaN, not measured, is left out)."""
    scores = {}
    for event in run.read_events():
        if event.kind == Score.kind and event.subject_fidelity == event.subject_fidelity:
            scores[event.checkpoint] = event.subject_fidelity
    return scores


@dataclass(frozen=True)
class ModelRef:
    """What to draw with: a base model, optionally with a LoRA or fine-tuned UNet weights on top."""

    key: str  # unique and stable: caches adapters and pipelines by it
    label: str  # what grids and galleries show
    base: ModelSource
    lora_file: Path | None = None
    full_model_dir: Path | None = None  # a finished full fine-tune (diffusers folder)
    unet_state_file: Path | None = None  # a full fine-tune checkpoint (trainable.safetensors)
    embeddings_file: Path | None = None  # a learned token (textual inversion; with lora_file, pivotal tuning)
    token: str = ""  # that token ("<sks>"): prompts that name the plain identifier say it instead
    vae_dir: Path | None = None  # the detail stage's tuned VAE, drawn with in place of the base model's

    def spoken(self, prompt: str) -> str:
        """The prompt as this model is asked it: "sks" becomes "<sks>" for a learned token."""
        if not self.token:
            return prompt
        from studio.models.embeddings import spell_token

        return spell_token(prompt, self.token)


@dataclass(frozen=True)
class ModelChoice:
    id: str  # "base", "run:<id>", "run:<id>@<step>"
    label: str


class DrawableModels:
    """What each user may draw with: the base model and their own runs' models and checkpoints."""

    def __init__(self, catalog: ModelCatalog, workspace: Workspace, *, local_paths: bool) -> None:
        self.catalog = catalog
        self.workspace = workspace
        self.local_paths = local_paths  # the local CLI may name folders and files; a shared Space never

    def choices(self, user: str) -> list[ModelChoice]:
        """The base model, then each run's final model and checkpoints, newest first; checkpoints that were scored
        say how well they learned the subject, so the picker itself helps choose."""
        choices = [ModelChoice(BASE, f"base model ({self.catalog.short_name()})")]
        for run_id in self.workspace.run_ids(user):
            run = RunFolder(self.workspace.run_dir(user, run_id))
            name = run.read_meta().name if run.has_meta() else ""
            label = name or run_id
            if run.output.is_dir():
                choices.append(ModelChoice(f"{RUN_PREFIX}{run_id}", f"{label} (final)"))
            scores = subject_scores(run) if run.checkpoints.is_dir() else {}
            for step in reversed(run.checkpoint_steps()):
                score = scores.get(step_name(step))
                suffix = f" · subject {score:.0%}" if score is not None else ""
                choices.append(ModelChoice(f"{RUN_PREFIX}{run_id}@{step}", f"{label} @ step {step}{suffix}"))
        return choices

    def ref(self, user: str, model_id: str) -> ModelRef:
        if model_id == BASE:
            return ModelRef("base:" + self.catalog.default.location, "base model", self.catalog.default)
        if not isinstance(model_id, str) or not model_id.startswith(RUN_PREFIX):
            if self.local_paths and isinstance(model_id, str) and Path(model_id).exists():
                return self.path_ref(Path(model_id))
            raise NotFound(f"unknown model {model_id!r}; pick one from the list")
        run_id, _, step = model_id[len(RUN_PREFIX):].partition("@")
        run = RunFolder(self.workspace.run_dir(user, check_id(run_id, "run")))
        return self._run_ref(run, step, f"{user}/{run_id}@{step or 'final'}")

    def path_ref(self, path: Path) -> ModelRef:
        """A run folder (its final model), a checkpoint folder or a LoRA .safetensors file, for the local CLI."""
        path = path.resolve()
        if path.is_file():
            from studio.models.embeddings import is_embeddings_file

            if is_embeddings_file(path):
                return ModelRef(f"file:{path}", path.stem, self.catalog.default, embeddings_file=path,
                                token=_token_of(path))
            return ModelRef(f"file:{path}", path.stem, self.catalog.default, lora_file=path)
        step = ""
        if path.parent.name == CHECKPOINTS and parse_step(path.name) is not None:  # run/checkpoints/step-000100
            step, path = str(parse_step(path.name)), path.parent.parent
        return self._run_ref(RunFolder(path), step, f"dir:{path}@{step or 'final'}")

    def _run_ref(self, run: RunFolder, step: str, key: str) -> ModelRef:
        run_id = run.run_id
        base = self.catalog.source(run.read_meta().base_model if run.has_meta() else None)
        if not step:
            ref = folder_ref(key, run_id, base, run.output)
            if ref is None:
                raise NotFound(f"run {run_id} has no finished model yet; pick a checkpoint")
            return ref
        if not step.isdigit():
            raise NotFound(f"unknown checkpoint step {step!r} in run {run_id}")
        folder = run.checkpoint_dir(int(step))
        if not (folder / CHECKPOINT_STATE).exists():
            raise NotFound(f"run {run_id} has no checkpoint at step {step}")
        return folder_ref(key, f"{run_id} @ {step}", base, folder)


def folder_ref(key: str, label: str, base: ModelSource, folder: Path) -> ModelRef | None:
    """What a run's output or checkpoint folder draws with: its learned token (and LoRA), its LoRA, its full model,
    or its trained weights (a full fine-tune's checkpoint), with the detail stage's VAE when it has one; None when it
    holds none of them."""
    ref = _weights_ref(key, label, base, folder)
    vae = folder / DETAIL_VAE_DIR
    return dataclasses.replace(ref, vae_dir=vae) if ref is not None and vae.is_dir() else ref


def _weights_ref(key: str, label: str, base: ModelSource, folder: Path) -> ModelRef | None:
    if (folder / EMBEDDINGS_FILE).exists():
        lora = folder / LORA_FILE
        return ModelRef(key, label, base, lora_file=lora if lora.exists() else None,
                        embeddings_file=folder / EMBEDDINGS_FILE, token=_token_of(folder / EMBEDDINGS_FILE))
    if (folder / LORA_FILE).exists():
        return ModelRef(key, label, base, lora_file=folder / LORA_FILE)
    if (folder / FULL_MODEL_DIR).is_dir():
        return ModelRef(key, label, base, full_model_dir=folder / FULL_MODEL_DIR)
    if (folder / TRAINABLE_FILE).exists():
        return ModelRef(key, label, base, unet_state_file=folder / TRAINABLE_FILE)
    return None


def _token_of(path: Path) -> str:
    from studio.models.embeddings import embedding_token

    return embedding_token(path)
