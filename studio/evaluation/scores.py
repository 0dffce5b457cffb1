"""What every scorer takes (pictures drawn from the evaluation prompts, and the user's photos) and gives (numbers)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from PIL import Image

from studio.evaluation.prompts import EvalPrompts

UNMEASURED = float("nan")  # a number a scorer could not measure: shown as "-", never invented


class ScorerUnavailable(RuntimeError):
    """A scorer cannot run at all (its models cannot be loaded, the judge cannot read the subject); the message is
    one line that says what to change."""


@dataclass(frozen=True)
class Drawn:
    prompt: str
    seed: int
    image: Image.Image


@dataclass(frozen=True)
class EvalImages:
    """One model's pictures for each role of the evaluation prompts."""

    prompts: EvalPrompts
    subject: tuple[Drawn, ...]
    recontext: tuple[Drawn, ...]
    classes: tuple[Drawn, ...]


@dataclass(frozen=True)
class Scores:
    """Fractions in [0, 1]; NaN where not measured. `extra` holds numbers shown beside them (e.g. CLIP-I)."""

    subject_fidelity: float = UNMEASURED
    prompt_fidelity: float = UNMEASURED
    drift: float = UNMEASURED
    diversity: float = UNMEASURED
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def measured(self) -> bool:
        return not math.isnan(self.subject_fidelity)


class Scorer(Protocol):
    name: str

    def prepare(self) -> None:
        """Load what the scorer needs (cheap to call again); raise ScorerUnavailable when it cannot run."""

    def score(self, drawn: EvalImages, photos: Sequence[Image.Image]) -> Scores:
        """Numbers for one model's pictures against the user's photos."""


def fraction(value: float) -> float:
    """Clamp a similarity into [0, 1] (cosine similarities of unrelated pictures can dip below 0)."""
    return UNMEASURED if math.isnan(value) else min(1.0, max(0.0, float(value)))
