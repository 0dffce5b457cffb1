"""A run's scorecard: its rows (from the run's Score events, the latest per checkpoint), the pick, and how they are
shown: a text table (CLI), one JSON object (`studio score --json`), a markdown table (the model card)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from studio.evaluation.pick import Pick, Row
from studio.events import Event, Score
from studio.runs import parse_step

BASE = "base"
# The notices that say which checkpoint is the run's output: the pick at the end of the run, or the user's choice.
KEPT = "scorecard: kept "
SWITCHED = "output switched to "
COLUMNS = (("subject_fidelity", "subject fidelity ↑"), ("prompt_fidelity", "prompt fidelity ↑"),
           ("drift", "drift (PRES) ↓"), ("diversity", "diversity ↑"))


def row_of(event: Score) -> Row:
    return Row(event.checkpoint, event.step, event.subject_fidelity, event.prompt_fidelity, event.drift,
               event.diversity, event.scorer, event.note)


def score_event(row: Row) -> Score:
    return Score(step=row.step, checkpoint=row.checkpoint, scorer=row.scorer, subject_fidelity=row.subject_fidelity,
                 prompt_fidelity=row.prompt_fidelity, drift=row.drift, diversity=row.diversity, note=row.note)


def latest_rows(events: Sequence[Event], scorer: str | None = None) -> dict[str, Row]:
    """The newest score of each checkpoint (by one scorer, when named)."""
    rows: dict[str, Row] = {}
    for event in events:
        if isinstance(event, Score) and (scorer is None or event.scorer == scorer):
            rows[event.checkpoint] = row_of(event)
    return rows


@dataclass(frozen=True)
class Scorecard:
    scorer: str
    base: Row | None
    rows: tuple[Row, ...]  # checkpoints by step, the final weights included
    pick: Pick | None = None
    notes: tuple[str, ...] = ()  # e.g. a half-written checkpoint that was skipped

    @classmethod
    def from_events(cls, events: Sequence[Event], pick: Pick | None = None) -> "Scorecard | None":
        """The scorecard a run's events hold (each model's newest scores); None before the first score."""
        rows = latest_rows(events)
        if not rows:
            return None
        base = rows.pop(BASE, None)
        scorer = next(iter(rows.values()), base).scorer
        return cls(scorer, base, tuple(sorted(rows.values(), key=lambda r: r.step)), pick)

    def to_json(self) -> dict[str, Any]:
        lines = [r for r in (self.base, *self.rows) if r is not None]
        return {"scorer": self.scorer, "rows": [_json_row(r) for r in lines],
                "best": self.pick.checkpoint if self.pick else None, "why": self.pick.why if self.pick else "",
                "notes": list(self.notes)}

    def table(self) -> str:
        lines = [r for r in (self.base, *self.rows) if r is not None]
        header = ["checkpoint", *(title for _, title in COLUMNS), "note"]
        cells = [[_label(r, self.pick), *(_fmt(getattr(r, name)) for name, _ in COLUMNS), r.note] for r in lines]
        widths = [max(len(str(c[i])) for c in [header, *cells]) for i in range(len(header))]
        text = [" | ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *cells]]
        text.insert(1, "-+-".join("-" * w for w in widths))
        text.append(f"scorer: {self.scorer}")
        text += list(self.notes)
        if self.pick:
            text.append(f"picked {self.pick.checkpoint}: {self.pick.why}")
        return "\n".join(text)

    def markdown(self) -> str:
        lines = [r for r in (self.base, *self.rows) if r is not None]
        if not lines:
            return ""
        out = ["## Scorecard", "", f"Scored by {self.scorer} (fractions in [0, 1]; `-` = not measured).", "",
               "| checkpoint | " + " | ".join(title for _, title in COLUMNS) + " |",
               "|---|" + "---:|" * len(COLUMNS)]
        out += [f"| {_label(r, self.pick)} | " + " | ".join(_fmt(getattr(r, n)) for n, _ in COLUMNS) + " |" for r in lines]
        if self.pick:
            out += ["", f"Picked **{self.pick.checkpoint}**: {self.pick.why}."]
        notes = sorted({r.note for r in lines if r.note and not r.measured})
        out += [""] + [f"> {n}" for n in notes] if notes else []
        return "\n".join(out) + "\n"


def _label(row: Row, pick: Pick | None) -> str:
    return row.checkpoint + (" *" if pick is not None and row.checkpoint == pick.checkpoint else "")


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _json_row(row: Row) -> dict[str, Any]:
    clean = lambda v: None if math.isnan(v) else round(float(v), 4)
    return {"checkpoint": row.checkpoint, "step": row.step, **{n: clean(getattr(row, n)) for n, _ in COLUMNS},
            "note": row.note}


def output_step(events) -> int | None:
    """The step whose files are the run's output now, from its newest pick or choice; None before either."""
    for event in reversed(list(events)):
        message = getattr(event, "message", "") if event.kind == "notice" else ""
        for prefix in (KEPT, SWITCHED):
            if message.startswith(prefix):
                step = parse_step(message[len(prefix):].split(" ", 1)[0])
                if step is not None:
                    return step
    return None
