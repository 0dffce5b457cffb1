"""Scoring an existing run folder (`studio score`): every complete checkpoint, the final weights and the base model.

Scores already in the run's events (same scorer) are reused; new ones are appended there as Score events, so the
next call, the app and the model card see them. A checkpoint folder that is half-written is skipped with a note.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from PIL import Image

from studio.config import TrainConfig
from studio.evaluation.drawing import base_cache_dir, draw_eval_images, load_cached, store_cached
from studio.evaluation.pick import Row, pick_checkpoint
from studio.evaluation.prompts import eval_prompts
from studio.evaluation.scorecard import BASE, Scorecard, latest_rows, score_event
from studio.evaluation.scores import ScorerUnavailable, Scores
from studio.evaluation.session import evaluate, make_scorer
from studio.events import EventLog, Finished
from studio.inference.models import ModelRef, folder_ref
from studio.inference.pipelines import native_size
from studio.models.sources import ModelSource, model_fingerprint
from studio.runs import LAST_DIR, RunFolder, parse_step, step_name


def final_step(run: RunFolder) -> int | None:
    """The step the run's output was trained to; None while it has no finished output."""
    finished = [e for e in run.read_events() if isinstance(e, Finished)]
    return finished[-1].step if finished and run.output.is_dir() else None


def final_weights(run: RunFolder) -> Path:
    """Where the last step's files are: `output/last/` while an earlier checkpoint is the output, else `output/`."""
    return run.output / LAST_DIR if (run.output / LAST_DIR).is_dir() else run.output


def _ref(name: str, folder: Path, base: ModelSource) -> ModelRef:
    key = f"score:{folder}:{folder.stat().st_mtime_ns}"  # a re-written folder is a new model to the pipeline cache
    ref = folder_ref(key, name, base, folder)
    if ref is None:
        raise FileNotFoundError(f"{folder} holds no weights to score")
    return ref


def skipped_checkpoints(run: RunFolder) -> list[str]:
    """Checkpoint folders that are not complete (being written, or cut short by a crash)."""
    if not run.checkpoints.is_dir():
        return []
    complete = {p.name for p in run.checkpoint_dirs()}
    return sorted(p.name for p in run.checkpoints.iterdir()
                  if p.is_dir() and p.name not in complete and (parse_step(p.name.removesuffix(".tmp")) is not None))


def training_photos(run: RunFolder, photos_dir: Path, resolution: int) -> list[Image.Image]:
    """The user's photos as the run trained on them (same crops, same size): what generations are compared with."""
    from studio.data.curate import list_dataset_files
    from studio.data.dataset import prepare_training_images
    from studio.data.photoset import read_crops

    meta, config = run.read_meta(), run.train_config()
    size = (config.resolution if config else 0) or resolution
    prepared = prepare_training_images(list_dataset_files(photos_dir), size, meta.crops or read_crops(photos_dir) or None,
                                       config.subject_type if config else "object")
    return [p.image for p in prepared]


def score_run(run: RunFolder, *, source: ModelSource, photos: Sequence[Image.Image], cache_root: Path, device,
              scorer_models: Sequence[str] = (), checkpoint: str | None = None, measure: bool = True) -> Scorecard:
    """The run's scorecard, scoring what has no score yet (with `measure`; without, only what is known is shown).
    `checkpoint` ("step-000200") limits the work to one."""
    from studio.inference.pipelines import PipelineCache
    from studio.training.hardware import pick_device

    config = run.train_config()
    if config is None:
        raise FileNotFoundError(f"{run.path} is not a run folder (no config.json)")
    if scorer_models:
        config = dataclasses.replace(config, scorer_models=tuple(scorer_models))
    device = pick_device(device)
    scorer = make_scorer(source.kind, config, device)
    prompts = eval_prompts(config, world=source.kind == "builtin")
    log = EventLog(run.events_file)
    known = latest_rows(run.read_events(), scorer.name)
    last = final_step(run)
    models = {BASE: (0, None)} | {p.name: (parse_step(p.name), p) for p in run.checkpoint_dirs()}
    if last is not None:
        models[step_name(last)] = (last, final_weights(run))
    if checkpoint is not None and checkpoint not in models:
        raise FileNotFoundError(f"no complete checkpoint {checkpoint!r} in {run.path}; it has: "
                                f"{', '.join(n for n in models if n != BASE) or 'none'}")
    wanted = [n for n in models if checkpoint is None or n in (checkpoint, BASE)]
    notes = tuple(f"skipped {name}: half-written" for name in skipped_checkpoints(run))
    cache = PipelineCache(device, max_models=1)
    usable = None
    try:
        if measure and any(n not in known or not known[n].measured for n in wanted):
            scorer.prepare()
    except ScorerUnavailable as exc:
        usable = str(exc)
    for name in wanted if measure else []:
        if name in known and known[name].measured:
            continue
        step, folder = models[name]
        scores = Scores(note=usable) if usable else _score_one(cache, scorer, prompts, config, source, folder, photos,
                                                             cache_root)
        row = Row(name, step, scores.subject_fidelity, scores.prompt_fidelity, scores.drift, scores.diversity,
                  scorer.name, scores.note)
        log.emit(score_event(row))
        known[name] = row
    rows = tuple(sorted((known[n] for n in wanted if n != BASE and n in known), key=lambda r: r.step))
    available = [r for r in rows if r.checkpoint in models]
    pick = pick_checkpoint(available, known.get(BASE)) if available else None
    return Scorecard(scorer.name, known.get(BASE), rows, pick, notes)


def _score_one(cache, scorer, prompts, config: TrainConfig, source: ModelSource, folder: Path | None, photos,
               cache_root: Path) -> Scores:
    """Draw one model's evaluation pictures (the base model's from the cache when an earlier run drew them)."""
    ref = ModelRef(f"base:{source.location}", BASE, source) if folder is None else _ref(folder.name, folder, source)
    with cache.lock:
        pipe = cache.pipeline(ref, None)  # the scheduler training-time scoring and the previews draw with
        resolution = native_size(pipe)
        settings = dict(resolution=resolution, steps=config.preview_steps, guidance=config.preview_guidance)
        cached_dir = cached = None
        if folder is None:
            cached_dir = base_cache_dir(cache_root, model_fingerprint(source), prompts, **settings)
            cached = load_cached(cached_dir, prompts)
        drawn = draw_eval_images(pipe, prompts, reuse=cached, **settings)
        if cached_dir is not None and cached is None:
            store_cached(cached_dir, drawn)
    return evaluate(scorer, drawn, photos)


