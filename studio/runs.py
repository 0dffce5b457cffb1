"""The run folder: its layout, its metadata, and what state a run is in.

Every name inside a run folder is written here and nowhere else:

    <run>/run.json            RunMeta: what was asked for (photos, presets, overrides, base model, name)
    <run>/config.json         the resolved config, every value with its source
    <run>/events.jsonl        the run's typed events (studio.events)
    <run>/previews/step-NNNNNN/
    <run>/checkpoints/step-NNNNNN/   complete checkpoints (a `.tmp` suffix marks one being written)
    <run>/output/             the finished model and its card

A `RunFolder` is a path with names; it reads and writes nothing on its own
except through the methods that say so.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from studio.config import TrainConfig
from studio.events import Cancelled, Event, Failed, Finished, read_events

RUN_META = "run.json"
CONFIG = "config.json"
EVENTS = "events.jsonl"
PREVIEWS = "previews"
CHECKPOINTS = "checkpoints"
OUTPUT = "output"
FULL_MODEL_DIR = "model"  # output/model: a finished full fine-tune as a diffusers folder
LAST_DIR = "last"  # output/last/: the last step's files while the scorecard's pick (an earlier checkpoint) is the output
LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' own name: `pipe.load_lora_weights(folder)` finds it
EMBEDDINGS_FILE = "learned_embeds.safetensors"  # textual inversion's, diffusers' name (`pipe.load_textual_inversion`)
DETAIL_VAE_DIR = "vae"  # output/vae: the detail stage's tuned VAE (`AutoencoderKL.from_pretrained`), beside a LoRA
TRAINABLE_FILE = "trainable.safetensors"  # a checkpoint's trained weights (LoRA layers or the full UNet/TE)
CHECKPOINT_STATE = "state.json"  # written last: a checkpoint folder with it is complete
STEP_PREFIX = "step-"


def a1111_embedding_file(token: str) -> str:
    """A learned token's A1111 / ComfyUI embedding: `sks.safetensors` (those tools name the token by the file), unless
    that is one of the run's own files (an identifier `learned_embeds`), which it must not overwrite."""
    name = f"{token.strip('<>')}.safetensors"
    return name if name not in (EMBEDDINGS_FILE, LORA_FILE) else f"{token.strip('<>')}-a1111.safetensors"


class RunStatus(str, Enum):
    """What a user is told a run is doing. The terminal ones never change without a new Start or Resume."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = Finished.kind  # the terminal event kinds are the terminal statuses' own words
    FAILED = Failed.kind
    CANCELLED = Cancelled.kind
    INTERRUPTED = "interrupted"  # the studio stopped while it trained (no terminal event): resumable

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def resumable(self) -> bool:
        """Stopped or cut short: Resume continues it from its last complete checkpoint."""
        return self in (RunStatus.CANCELLED, RunStatus.INTERRUPTED, RunStatus.FAILED)

    def __str__(self) -> str:
        return self.value


TERMINAL_STATUSES = frozenset({RunStatus.FINISHED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.INTERRUPTED})
# The event kinds that end a run (an "interrupted" run has none: that is how it is recognised).
TERMINAL_EVENTS = frozenset({RunStatus.FINISHED.value, RunStatus.FAILED.value, RunStatus.CANCELLED.value})


def is_terminal(status: str | RunStatus) -> bool:
    try:
        return RunStatus(status).is_terminal
    except ValueError:
        return False


def step_name(step: int) -> str:
    """The folder name of a step's checkpoint or previews: `step-000120` (sorts by step as text)."""
    return f"{STEP_PREFIX}{int(step):06d}"


def parse_step(name: str) -> int | None:
    """`step-000120` -> 120; None for anything else (a `.tmp` folder, a stray file)."""
    digits = name[len(STEP_PREFIX):] if name.startswith(STEP_PREFIX) else ""
    return int(digits) if digits.isdigit() else None


@dataclass(frozen=True)
class RunMeta:
    """What a run was asked to do: enough to start it again, or to resume it, after a restart."""

    run_id: str
    owner: str
    presets: tuple[str, ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict)
    base_model: str | None = None  # None: the studio's default base model
    dataset_id: str | None = None  # a photo set in the user's workspace (the app) ...
    images_dir: str | None = None  # ... or a folder of photos (the local CLI)
    crops: dict[str, list[float]] = field(default_factory=dict)
    name: str = ""  # what the user calls it; empty = derived from the settings
    created: float = field(default_factory=time.time)
    # several subjects in one run (studio.concepts.Concept dicts, the run's own first); [] = the one subject above
    concepts: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["presets"] = list(self.presets)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunMeta":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["presets"] = tuple(known.get("presets") or ())
        known["overrides"] = dict(known.get("overrides") or {})
        known["crops"] = dict(known.get("crops") or {})
        known["concepts"] = list(known.get("concepts") or [])
        return cls(**known)


class RunFolder:
    """One run's folder on disk: names, metadata, events and checkpoints."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def run_id(self) -> str:
        return self.path.name

    # -- names ------------------------------------------------------------------------
    @property
    def meta_file(self) -> Path:
        return self.path / RUN_META

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    @property
    def events_file(self) -> Path:
        return self.path / EVENTS

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def output(self) -> Path:
        return self.path / OUTPUT

    def preview_dir(self, step: int) -> Path:
        return self.path / PREVIEWS / step_name(step)

    def checkpoint_dir(self, step: int) -> Path:
        return self.checkpoints / step_name(step)

    def relative(self, path: Path) -> str:
        """A path inside the run as the events store it (run-relative, POSIX)."""
        return Path(path).relative_to(self.path).as_posix()

    # -- metadata, config, events ----------------------------------------------------------
    def has_meta(self) -> bool:
        return self.meta_file.is_file()

    def write_meta(self, meta: RunMeta) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.meta_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta.to_dict(), indent=2), encoding="utf-8")
        tmp.replace(self.meta_file)

    def read_meta(self) -> RunMeta:
        data = json.loads(self.meta_file.read_text(encoding="utf-8"))
        data.setdefault("run_id", self.run_id)
        data.setdefault("owner", "local")
        return RunMeta.from_dict(data)

    def write_config(self, text: str) -> None:
        self.config_file.write_text(text, encoding="utf-8")

    def read_config(self) -> dict[str, Any]:
        """The resolved config as saved ({"config": ..., "sources": ...}); {} before the run resolved it."""
        return json.loads(self.config_file.read_text(encoding="utf-8")) if self.config_file.is_file() else {}

    def train_config(self) -> TrainConfig | None:
        """The settings the run used, once it resolved them."""
        saved = self.read_config().get("config")
        return TrainConfig.from_saved(saved) if saved else None

    def rename(self, name: str) -> str:
        clean = clean_name(name)
        if not clean:
            raise ValueError("a run's name can't be empty")
        self.write_meta(replace(self.read_meta(), name=clean))
        return clean

    def has_events(self) -> bool:
        return self.events_file.exists()

    def read_events(self) -> list[Event]:
        return read_events(self.events_file) if self.events_file.exists() else []

    # -- checkpoints and outputs -------------------------------------------------------------
    def checkpoint_dirs(self) -> list[Path]:
        """Complete checkpoints, oldest first (a folder counts once its state file was written)."""
        if not self.checkpoints.is_dir():
            return []
        found = [p for p in self.checkpoints.iterdir() if p.is_dir() and parse_step(p.name) is not None]
        return sorted((p for p in found if (p / CHECKPOINT_STATE).exists()), key=lambda p: parse_step(p.name))

    def checkpoint_steps(self) -> list[int]:
        return [parse_step(p.name) for p in self.checkpoint_dirs()]

    def latest_checkpoint(self) -> Path | None:
        dirs = self.checkpoint_dirs()
        return dirs[-1] if dirs else None

    def outputs(self) -> dict[str, Path]:
        """Every file of the finished model, by its path relative to `output/`."""
        if not self.output.is_dir():
            return {}
        return {p.relative_to(self.output).as_posix(): p for p in sorted(self.output.rglob("*")) if p.is_file()}


def clean_name(name: str | None) -> str:
    """A user's name for a run: one line, spaces tidied, at most 80 characters."""
    return " ".join(str(name or "").split())[:80]


def default_name(config: TrainConfig, presets: Any) -> str:
    """What a run is called unless the user names it: "sks dog · object-lora · 2026-12-03 15:40"."""
    return " · ".join([f"{config.identifier} {config.class_noun}".strip(), presets[-1] if presets else "custom",
                       time.strftime("%Y-%m-%d %H:%M")])


@dataclass(frozen=True)
class RunState:
    """A run as the user sees it: its status, place in the queue and progress."""

    run_id: str
    status: RunStatus
    queue_position: int  # 0 while running, n = n-th in line for the next free device, -1 when not queued
    step: int
    max_steps: int
    message: str = ""
    checkpoint: str = ""  # the last complete checkpoint (what Resume continues from), "" when none
    queue_wait: float | None = None  # about how many seconds until it gets a device; None when that can't be told

    @property
    def resumable(self) -> bool:
        return self.status.resumable and self.step < self.max_steps


@dataclass(frozen=True)
class RunSummary:
    """One line of a user's run list."""

    run_id: str
    name: str
    status: RunStatus
    step: int
    max_steps: int
    presets: tuple[str, ...]
    created: float

    @classmethod
    def of(cls, run: RunFolder, state: RunState) -> "RunSummary":
        meta = run.read_meta() if run.has_meta() else RunMeta(run.run_id, "", created=run.path.stat().st_mtime)
        return cls(run.run_id, meta.name, state.status, state.step, state.max_steps, meta.presets, meta.created)


def derive_state(run_id: str, events: list[Event], *, job_status: str | None, paused: bool, queue_position: int,
                 checkpoint: str = "", job_since: float = 0.0, queue_wait: float | None = None) -> RunState:
    """The user-facing state from the run's events and, while it is queued or training, its job.

    `job_status` is the job's own state (queued, running or done) or None when no job of this studio holds it;
    `job_since` when that job was submitted (a resumed run's old "cancelled" is not the new attempt's end).
    A run with events but neither a job nor a terminal event was cut short: the studio stopped under it.
    """
    steps = [e for e in events if e.kind == "step"]
    started = [e for e in events if e.kind == "started"]
    step = steps[-1].step if steps else (started[-1].resumed_from if started else 0)
    max_steps = started[-1].max_steps if started else 0
    terminal = next((e for e in reversed(events) if e.kind in TERMINAL_EVENTS), None)
    # A terminal event older than the latest start belongs to an earlier attempt (the run was resumed since).
    current_terminal = terminal if terminal is not None and (not started or terminal.time >= started[-1].time) else None
    live = job_status in (RunStatus.QUEUED, RunStatus.RUNNING)
    if live:
        status = RunStatus.QUEUED if job_status == RunStatus.QUEUED else (RunStatus.PAUSED if paused else RunStatus.RUNNING)
        if job_status == RunStatus.RUNNING and current_terminal is not None and current_terminal.time >= job_since:
            status = RunStatus(current_terminal.kind)
    elif current_terminal is not None:
        status = RunStatus(current_terminal.kind)
    else:
        status = RunStatus.INTERRUPTED if events else RunStatus.QUEUED
    message = getattr(current_terminal, "error", "") if status is RunStatus.FAILED else ""
    position = queue_position if live else -1
    wait = queue_wait if status == RunStatus.QUEUED else None
    return RunState(run_id, status, position, step, max_steps, message, checkpoint, wait)
