"""The rule that picks the checkpoint to keep, in one pure function.

    Among the scored checkpoints (the final weights included) that learned something (subject fidelity above the
    base model's) and stay within the margins (drift at most the base model's plus DRIFT_MARGIN, prompt fidelity at
    least the base model's minus PROMPT_MARGIN), keep the one with the highest subject fidelity; ties go to higher
    prompt fidelity, then lower drift, then the later step.
    When none qualifies, keep the one with the highest subject fidelity less how far it went beyond the margins
    (so an untrained checkpoint that never drifted does not win by default).
    When nothing was scored, keep the last step.

The DreamBooth paper's warning is the reason: training longer raises subject fidelity until the model starts to
forget its class (drift) and ignore context (prompt fidelity); the best checkpoint is often an earlier one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

DRIFT_MARGIN = 0.10
PROMPT_MARGIN = 0.10


@dataclass(frozen=True)
class Row:
    """One model's scorecard line; NaN where not measured."""

    checkpoint: str  # "base" or a checkpoint folder's name ("step-000400")
    step: int
    subject_fidelity: float
    prompt_fidelity: float
    drift: float
    diversity: float
    scorer: str = ""
    note: str = ""

    @property
    def measured(self) -> bool:
        return not math.isnan(self.subject_fidelity)


@dataclass(frozen=True)
class Pick:
    checkpoint: str
    step: int
    why: str


def _known(value: float) -> bool:
    return not math.isnan(value)


def overshoot(row: Row, base: Row | None) -> float:
    """How far beyond the margins a row went (0 = within them, or no base to compare with)."""
    if base is None:
        return 0.0
    over = 0.0
    if _known(row.drift) and _known(base.drift):
        over += max(0.0, row.drift - (base.drift + DRIFT_MARGIN))
    if _known(row.prompt_fidelity) and _known(base.prompt_fidelity):
        over += max(0.0, (base.prompt_fidelity - PROMPT_MARGIN) - row.prompt_fidelity)
    return over


def pick_checkpoint(rows: Sequence[Row], base: Row | None = None) -> Pick:
    """`rows`: the checkpoints that can still be kept (their files exist), the final weights last."""
    if not rows:
        raise ValueError("nothing to pick from: the run has no checkpoints and no final weights")
    base = base if base is not None and base.measured else None
    scored = [r for r in rows if r.measured]
    last = max(rows, key=lambda r: r.step)
    if not scored:
        return Pick(last.checkpoint, last.step, "no checkpoint could be scored, so the last step is kept")
    order = lambda r: (r.subject_fidelity, _or(r.prompt_fidelity, 0.0), -_or(r.drift, 1.0), r.step)
    learned = lambda r: base is None or r.subject_fidelity > base.subject_fidelity
    within = [r for r in scored if overshoot(r, base) == 0.0 and learned(r)]
    margins = (f"drift at most the base model's {base.drift:.2f} + {DRIFT_MARGIN:.2f} and prompt fidelity at least "
               f"its {_or(base.prompt_fidelity, 0.0):.2f} - {PROMPT_MARGIN:.2f}") if base else "no base model score to compare"
    if within:
        best = max(within, key=order)
        why = (f"highest subject fidelity ({best.subject_fidelity:.2f}) of the {len(within)} of {len(scored)} scored "
               f"checkpoints that learned the subject within the margins ({margins})")
    else:
        best = max(scored, key=lambda r: (r.subject_fidelity - overshoot(r, base), *order(r)))
        why = (f"no checkpoint learned the subject within the margins ({margins}); it has the best subject fidelity "
               f"({best.subject_fidelity:.2f}) for how far it went beyond them ({overshoot(best, base):.2f})")
    return Pick(best.checkpoint, best.step, why)


def _or(value: float, default: float) -> float:
    return value if _known(value) else default
