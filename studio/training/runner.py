"""Turn a run folder (run.json) into a training request and run it: shared by the job queue and the CLI."""
from __future__ import annotations

import json
from pathlib import Path

from studio.events import EventLog, Failed, Phase
from studio.training.commands import RunCommands
from studio.training.loop import RunOutcome, TrainRequest, train


def run_training(studio, user: str, run_dir: Path, log: EventLog, commands: RunCommands, *, resume: bool, emit=None) -> RunOutcome:
    """Load the base model, prepare the photos at its resolution, resolve the config, train."""
    from studio.data.dataset import prepare_training_images
    from studio.data.curate import list_dataset_files
    from studio.models.families import load_components
    from studio.models.sources import ModelLoadError

    def send(event) -> None:
        log.emit(event)
        if emit is not None:
            emit(event)

    meta = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    try:
        send(Phase(name="loading", detail="base model and photos"))
        source = studio.source(meta.get("base_model"))
        comps = load_components(source)
        first = studio.resolve(meta["presets"], meta["overrides"], num_images=1, user=user).config
        resolution = first.resolution or comps.native_resolution
        folder = Path(meta["images_dir"]) if "images_dir" in meta else studio.workspace.dataset_dir(user, meta["dataset_id"])
        files = list_dataset_files(folder)
        images = prepare_training_images(files, resolution, meta.get("crops") or studio.read_crops(folder) or None, first.subject_type)
        resolved = studio.resolve(meta["presets"], meta["overrides"], num_images=len(images), user=user)
    except (ModelLoadError, ValueError, KeyError) as exc:
        send(Failed(error=str(exc), advice="check the base model and the photos, then start again"))
        return RunOutcome("failed", 0)
    request = TrainRequest(
        run_id=run_dir.name, run_dir=run_dir, resolved=resolved, source=source, images=images,
        class_cache_root=studio.workspace.class_image_cache, resume=resume, device=studio.device, components=comps,
    )
    return train(request, send, commands)
