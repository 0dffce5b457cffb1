"""Scoring during training: what the loop calls when a checkpoint is written, at the end, and for the base model.

The loop hands over small typed parts (the loaded components, the config, the photos, the device), never Studio.
Scoring never stops or corrupts a run: pictures are drawn in eval mode without gradients and with the global RNG
restored, and any failure becomes a note on the Score event plus one Notice, never an exception.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from PIL import Image

from studio.config import TrainConfig
from studio.evaluation.drawing import Reuse, base_cache_dir, draw_eval_images, load_cached, store_cached
from studio.evaluation.pick import Row, pick_checkpoint
from studio.evaluation.prompts import EvalPrompts, eval_prompts
from studio.evaluation.scorecard import BASE, KEPT, Scorecard, latest_rows, score_event
from studio.evaluation.scores import EvalImages, Scorer, ScorerUnavailable, Scores
from studio.events import Emit, Notice, Preview
from studio.models.sources import model_fingerprint
from studio.runs import RunFolder, step_name


def make_scorer(source_kind: str, config: TrainConfig, device: Any = "cpu") -> Scorer:
    """The built-in world's judge for the built-in model, DINOv2 + CLIP for every other model."""
    if source_kind == "builtin":
        from studio.evaluation.world import WorldScorer

        return WorldScorer(config.class_noun)
    from studio.evaluation.embedding import EmbeddingScorer

    return EmbeddingScorer(config.scorer_models, device)


def evaluate(scorer: Scorer, drawn: EvalImages, photos: Sequence[Image.Image]) -> Scores:
    """`scorer.score`, with a scorer that cannot run turned into unmeasured numbers and its one-line reason."""
    try:
        return scorer.score(drawn, photos)
    except ScorerUnavailable as exc:
        return Scores(note=str(exc))


@dataclass
class TrainingScorer:
    """One run's scorecard while it trains. `comps` hold the weights being trained: scoring draws with them live."""

    comps: Any
    config: TrainConfig
    source_kind: str
    run: RunFolder
    photos: Sequence[Image.Image]
    cache_root: Path
    resolution: int
    device: torch.device
    emit: Emit
    autocast: Callable = contextlib.nullcontext
    # a several-subject run's other subjects (each one's config and photos): every subject is scored on its own
    # prompts and photos, and a checkpoint's numbers are their mean (each one's in the row's note)
    others: Sequence[tuple[TrainConfig, Sequence[Image.Image]]] = ()
    seconds: float = 0.0  # time spent scoring (reported at the end: its share of the run)
    _scorer: Scorer | None = None
    _other_scorers: dict[int, Scorer] = field(default_factory=dict)
    _told: bool = False
    _preview: Preview | None = None
    _rows: dict[str, Row] = field(default_factory=dict)
    _scored: list[str] = field(default_factory=list)  # what this attempt scored

    def __post_init__(self) -> None:
        self.prompts: EvalPrompts = eval_prompts(self.config, world=self.source_kind == "builtin")
        self._rows = latest_rows(self.run.read_events())  # earlier attempts of a resumed run

    @property
    def enabled(self) -> bool:
        return self.config.score_checkpoints

    @property
    def scorer(self) -> Scorer:
        if self._scorer is None:
            self._scorer = make_scorer(self.source_kind, self.config, self.device)
        return self._scorer

    # -- what the loop calls -------------------------------------------------------------------
    def saw_preview(self, event: Preview) -> None:
        """Previews drawn at a step that is then scored serve both (same prompt, seed, steps and guidance)."""
        self._preview = event

    def score_base(self) -> None:
        """The untouched model, once per base model and prompt set (its pictures are cached across runs)."""
        if self.enabled:
            self._score(BASE, 0, base=True)

    def score_weights(self, step: int) -> None:
        """The weights as they are now: at a checkpoint, and at the end of the run."""
        if self.enabled:
            self._score(step_name(step), step)

    def best_checkpoints(self) -> tuple[str, ...]:
        """The checkpoint the pick would keep now, so that pruning old checkpoints spares it (else the best one of an
        over-trained run would be deleted before the end, when the pick is made)."""
        on_disk = {p.name for p in self.run.checkpoint_dirs()}
        rows = [r for name, r in self._rows.items() if name in on_disk]
        if not self.enabled or not rows:
            return ()
        return (pick_checkpoint(rows, self._rows.get(BASE)).checkpoint,)

    def finish(self, final_step: int) -> Scorecard | None:
        """Score the final weights, pick the checkpoint to keep, say which and why; None when scoring is off."""
        if not self.enabled:
            return None
        self.score_weights(final_step)
        try:
            return self._pick(final_step)
        except Exception as exc:  # the run's weights are fine: the output is then simply the last step's
            self.emit(Notice(message=f"scorecard: no pick ({type(exc).__name__}: {str(exc)[:200]}); the output is the last step"))
            return None

    def _pick(self, final_step: int) -> Scorecard:
        final = step_name(final_step)
        kept = {p.name for p in self.run.checkpoint_dirs()} | {final}
        rows = sorted((r for k, r in self._rows.items() if k != BASE), key=lambda r: r.step)
        available = [r for r in rows if r.checkpoint in kept and r.step <= final_step]
        pick = pick_checkpoint(available, self._rows.get(BASE)) if available else None
        card = Scorecard(self.scorer.name, self._rows.get(BASE), tuple(r for r in rows if r.step <= final_step), pick)
        if pick is not None:
            where = "the last step" if pick.checkpoint == final else "its files are the output; the last step's are in output/last"
            self.emit(Notice(message=f"{KEPT}{pick.checkpoint} ({where}): {pick.why}"))
        self.emit(Notice(message=f"scorecard: {len(self._scored)} models scored in {self.seconds:.1f} s"))
        return card

    # -- the work ------------------------------------------------------------------------------
    def _score(self, name: str, step: int, *, base: bool = False) -> None:
        tic = time.perf_counter()
        try:
            scores = self._measure(base=base, step=step)
        except Exception as exc:  # scoring must never end a run: the failure is reported, training goes on
            scores = Scores(note=f"scoring {name} failed: {type(exc).__name__}: {str(exc)[:200]}")
        finally:
            self.seconds += time.perf_counter() - tic
        if scores.note and not scores.measured and not self._told:
            self._told = True
            self.emit(Notice(message=f"scorecard: {scores.note}"))
        row = Row(name, step, scores.subject_fidelity, scores.prompt_fidelity, scores.drift, scores.diversity,
                  self.scorer.name, scores.note)
        self._rows[name] = row
        self._scored.append(name)
        self.emit(score_event(row))

    def _measure(self, *, base: bool, step: int) -> Scores:
        first = self._measure_subject(self.scorer, self.prompts, self.photos, base=base, step=step)
        if not self.others:
            return first
        scores = [first]
        for index, (config, photos) in enumerate(self.others):
            if index not in self._other_scorers:
                self._other_scorers[index] = make_scorer(self.source_kind, config, self.device)
            prompts = eval_prompts(config, world=self.source_kind == "builtin")
            scores.append(self._measure_subject(self._other_scorers[index], prompts, photos, base=base, step=step))
        return _mean_of([self.config.identifier, *(c.identifier for c, _ in self.others)], scores)

    def _measure_subject(self, scorer: Scorer, prompts: EvalPrompts, photos, *, base: bool, step: int) -> Scores:
        try:
            scorer.prepare()  # before drawing: a scorer that cannot load costs no pictures
        except ScorerUnavailable as exc:
            return Scores(note=str(exc))
        drawn = self._base_pictures(prompts) if base else self._draw(prompts, self._reuse(step, prompts))
        return evaluate(scorer, drawn, photos)

    def _reuse(self, step: int, prompts: EvalPrompts) -> Reuse:
        event = self._preview
        if event is None or event.step != step:
            return {}
        wanted = set(prompts.pairs())
        return {(p, s): Image.open(self.run.path / path).convert("RGB")
                for p, s, path in zip(event.prompts, event.seeds, event.images) if (p, s) in wanted}

    def _draw(self, prompts: EvalPrompts, reuse: Reuse | None = None) -> EvalImages:
        from studio.inference.pipelines import build_pipeline, drawing_mode

        with drawing_mode(self.comps):
            return draw_eval_images(build_pipeline(self.comps), prompts, resolution=self.resolution,
                                    steps=self.config.preview_steps, guidance=self.config.preview_guidance,
                                    autocast=self.autocast, reuse=reuse)

    def _base_pictures(self, prompts: EvalPrompts) -> EvalImages:
        folder = base_cache_dir(self.cache_root, model_fingerprint(self.comps.source), prompts, resolution=self.resolution,
                                steps=self.config.preview_steps, guidance=self.config.preview_guidance)
        cached = load_cached(folder, prompts)
        drawn = self._draw(prompts, cached)
        if cached is None:
            store_cached(folder, drawn)
        return drawn


def _mean_of(identifiers: Sequence[str], scores: Sequence[Scores]) -> Scores:
    """Several subjects' scores as one row: each measure's mean over the subjects that measured it, and every
    subject's own numbers in the note (so a subject left behind is seen, not averaged away)."""
    import math

    def mean(name: str) -> float:
        values = [getattr(s, name) for s in scores if not math.isnan(getattr(s, name))]
        return sum(values) / len(values) if values else math.nan

    cell = lambda v: "-" if math.isnan(v) else f"{v:.2f}"  # noqa: E731
    each = "; ".join(f"{i}: subject {cell(s.subject_fidelity)}, prompt {cell(s.prompt_fidelity)}, drift {cell(s.drift)}"
                     for i, s in zip(identifiers, scores))
    notes = "; ".join(dict.fromkeys(s.note for s in scores if s.note))
    return Scores(mean("subject_fidelity"), mean("prompt_fidelity"), mean("drift"), mean("diversity"),
                  note=f"mean of {len(scores)} subjects ({each})" + (f"; {notes}" if notes else ""))
