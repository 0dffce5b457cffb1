"""Make a checkpoint the run's output: the scorecard's pick at the end of a run, or the user's own choice later.

The last step's files are never lost: while an earlier checkpoint is the output they live in `output/last/`, and
choosing the last step again moves them back.
"""
from __future__ import annotations

from studio.config import ResolvedConfig, TrainConfig
from studio.evaluation.pick import Pick
from studio.evaluation.rescore import final_step
from studio.evaluation.scorecard import SWITCHED, Scorecard
from studio.events import EventLog, Notice
from studio.models.sources import ModelSource
from studio.runs import RunFolder, step_name


def use_checkpoint(run: RunFolder, source: ModelSource, step: int | None) -> list[str]:
    """Switch the finished run's output to checkpoint `step` (None or the last step: the last step's files);
    returns the output's paths relative to the run folder."""
    from studio.training.export import export_checkpoint, restore_last

    last = final_step(run)
    if last is None:
        raise FileNotFoundError(f"run {run.run_id} has no finished output to switch")
    step = last if step is None else int(step)
    if step == last:
        outputs = restore_last(run)
    else:
        folder = run.checkpoint_dir(step)
        if folder not in run.checkpoint_dirs():
            kept = ", ".join(str(s) for s in run.checkpoint_steps()) or "none"
            raise FileNotFoundError(f"run {run.run_id} has no complete checkpoint at step {step} (kept: {kept}, "
                                    f"and the last step {last})")
        from studio.models.families import load_components
        from studio.training.trainable import prepare_trainable

        saved = run.read_config()
        resolved = ResolvedConfig(TrainConfig.from_saved(saved["config"]), dict(saved.get("sources", {})),
                                  int(saved.get("num_images", 0)))
        comps = load_components(source)
        trainable = prepare_trainable(comps, resolved.config)
        outputs = export_checkpoint(run, comps, trainable, resolved, source=source, checkpoint=folder,
                                    scorecard=_card(run, step))
    EventLog(run.events_file).emit(Notice(message=f"{SWITCHED}{step_name(step)} (chosen by you)"))
    return outputs


def _card(run: RunFolder, step: int) -> str:
    scorecard = Scorecard.from_events(run.read_events(), Pick(step_name(step), step, "chosen by you"))
    return scorecard.markdown() if scorecard is not None else ""
