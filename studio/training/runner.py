"""Turn a run folder (its run.json) into a training request and run it: shared by the job queue and the CLI.

It depends on small typed parts (the model catalogue, the run folder, the
photo folder, where presets and caches live), never on the `Studio` facade.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from studio.concepts import Concept, check_concepts
from studio.config import resolve_config
from studio.events import Emit, EventLog, Failed
from studio.models.catalog import ModelCatalog
from studio.runs import RunFolder, RunStatus
from studio.training.commands import RunCommands
from studio.training.distributed import SINGLE, World

if TYPE_CHECKING:
    from studio.training.loop import RunOutcome


@dataclass(frozen=True)
class TrainingEnv:
    """What every run of one studio shares: where models, presets and caches come from, and the device."""

    models: ModelCatalog
    cache_root: Path  # class images and the untouched model's previews, shared across runs
    device: str | None = None


def run_training(env: TrainingEnv, run: RunFolder, photos: Path, log: EventLog, commands: RunCommands, *,
                 presets_dir: Path | None = None, resume: bool, emit: Emit | None = None,
                 world: World = SINGLE, concept_photos: Callable[[Concept], Path] | None = None) -> RunOutcome:
    """Load the base model, prepare the photos at its resolution, resolve the config for them, train.
    A several-subject run (run.json's concepts) prepares each concept's photos, found by `concept_photos`."""
    from studio.data.curate import list_dataset_files
    from studio.data.dataset import prepare_training_images
    from studio.data.photoset import read_crops
    from studio.models.families import load_components
    from studio.models.sources import ModelLoadError
    from studio.training.loop import RunOutcome, TrainRequest, loading_phase, train  # torch: on first run, not at start-up
    from studio.training.subjects import Subject

    def send(event) -> None:
        if not world.is_main:  # the other processes of a multi-process run train silently
            return
        log.emit(event)
        if emit is not None:
            emit(event)

    meta = run.read_meta()
    try:
        source = env.models.source(meta.base_model)
        send(loading_phase(source))
        comps = load_components(source)
        resolved = resolve_config(list(meta.presets), meta.overrides, num_images=1, user_preset_dir=presets_dir)
        config = resolved.config
        resolution = config.resolution or comps.native_resolution
        images = prepare_training_images(list_dataset_files(photos), resolution,
                                         meta.crops or read_crops(photos) or None, config.subject_type)
        concepts = [Concept.from_dict(c) for c in meta.concepts] if len(meta.concepts) > 1 else []
        check_concepts(concepts, config)
        photo_sets = [images]
        for concept in concepts[1:]:
            folder = concept_photos(concept) if concept_photos else Path(concept.images)
            photo_sets.append(prepare_training_images(list_dataset_files(folder), resolution,
                                                      read_crops(folder) or None, config.subject_type))
        resolved = resolved.for_images(sum(map(len, photo_sets)))
        subjects = tuple(Subject(c.settings(resolved.config), p) for c, p in zip(concepts, photo_sets))
    except (ModelLoadError, ValueError, KeyError) as exc:
        send(Failed(error=str(exc), advice="check the base model and the photos, then start again"))
        return RunOutcome(RunStatus.FAILED, 0)
    request = TrainRequest(run=run, resolved=resolved, source=source, images=images,
                           cache_root=env.cache_root, resume=resume, device=env.device,
                           components=comps, world=world, subjects=subjects)
    return train(request, send, commands)
