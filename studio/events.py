"""Typed events of a run: what the training loop tells the world.

Events are frozen, JSON-serialisable dataclasses. A run's `EventLog` keeps them
in memory (so pollers can read "everything since cursor N" cheaply) and appends
each one to `runs/<id>/events.jsonl`, so a restarted studio still draws a
finished run's curves. The UI, the CLI and the tests all read the same log.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Event:
    kind: str = field(init=False, default="event")
    time: float = field(default_factory=time.time, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Started(Event):
    kind: str = field(init=False, default="started")
    run_id: str = ""
    max_steps: int = 0
    method: str = ""
    device: str = ""
    precision: str = ""
    resumed_from: int = 0


@dataclass(frozen=True)
class Notice(Event):
    """Something the user should know that does not stop the run (a fallback, a warning)."""

    kind: str = field(init=False, default="notice")
    message: str = ""


@dataclass(frozen=True)
class Phase(Event):
    """The run moved to a new phase (loading, class images, caching, training, saving)."""

    kind: str = field(init=False, default="phase")
    name: str = ""
    detail: str = ""


@dataclass(frozen=True)
class ClassImages(Event):
    kind: str = field(init=False, default="class_images")
    done: int = 0
    total: int = 0
    reused: int = 0


@dataclass(frozen=True)
class Step(Event):
    kind: str = field(init=False, default="step")
    step: int = 0
    max_steps: int = 0
    loss: float = 0.0
    instance_loss: float = 0.0
    prior_loss: float = 0.0
    lr: float = 0.0
    seconds: float = 0.0
    subject_losses: dict[str, float] = field(default_factory=dict)  # several subjects: identifier -> instance loss


@dataclass(frozen=True)
class Preview(Event):
    """Sample images at a step; `prompts[i]` drew `images[i]` (paths relative to the run folder)."""

    kind: str = field(init=False, default="preview")
    step: int = 0
    images: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()


@dataclass(frozen=True)
class Checkpoint(Event):
    kind: str = field(init=False, default="checkpoint")
    step: int = 0
    path: str = ""


@dataclass(frozen=True)
class Score(Event):
    """How a checkpoint (or the untouched base model, step 0) did on the scorecard; fractions in [0, 1]."""

    kind: str = field(init=False, default="score")
    step: int = 0
    checkpoint: str = ""  # "base" or the checkpoint folder's name
    scorer: str = ""
    subject_fidelity: float = 0.0  # generations of subject prompts look like the user's photos
    prompt_fidelity: float = 0.0  # recontextualised prompts are followed
    drift: float = 0.0  # plain class prompts look like the subject (the paper's PRES; lower is better)
    diversity: float = 0.0  # class-prompt generations differ from one another (the paper's DIV)
    note: str = ""  # e.g. why a scorer could not run


@dataclass(frozen=True)
class Finished(Event):
    kind: str = field(init=False, default="finished")
    step: int = 0
    outputs: tuple[str, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True)
class Failed(Event):
    kind: str = field(init=False, default="failed")
    step: int = 0
    error: str = ""
    advice: str = ""


@dataclass(frozen=True)
class Cancelled(Event):
    kind: str = field(init=False, default="cancelled")
    step: int = 0
    checkpoint: str = ""


EVENT_TYPES = {cls.kind: cls for cls in (Started, Notice, Phase, ClassImages, Step, Preview, Checkpoint, Score, Finished,
                                          Failed, Cancelled)}


def event_from_dict(data: dict[str, Any]) -> Event:
    cls = EVENT_TYPES[data["kind"]]
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k != "kind"}
    return cls(**values)


Emit = Callable[[Event], None]


class EventLog:
    """Thread-safe, append-only list of a run's events, mirrored to a JSON-lines file."""

    def __init__(self, path: Path | None = None) -> None:
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._path = path
        if path is not None and path.exists():
            self._events = list(read_events(path))

    def emit(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)
            if self._path is not None:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                with self._path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(event.to_dict()) + "\n")

    def since(self, cursor: int = 0) -> tuple[list[Event], int]:
        """Events after `cursor`, and the cursor to pass next time."""
        with self._lock:
            return self._events[cursor:], len(self._events)

    def all(self) -> list[Event]:
        with self._lock:
            return list(self._events)


def read_events(path: Path) -> list[Event]:
    """Read a run's events.jsonl; a half-written last line (after a crash) is skipped."""
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(event_from_dict(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return events
