"""An over-trained run's best checkpoint survives the pruning of old checkpoints until the pick is made."""
from __future__ import annotations

import torch

from studio.config import resolve_config
from studio.evaluation.pick import Row
from studio.evaluation.session import TrainingScorer
from studio.runs import RunFolder
from studio.training.checkpoint import LoopState, save_checkpoint


def save(run: RunFolder, step: int, protect=()) -> None:
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([param])
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    save_checkpoint(run, trainable_state={"w": param.detach().clone()}, optimizer=optimizer, lr_scheduler=schedule,
                    generator=torch.Generator(), loop=LoopState(step, {}), keep=2, protect=protect)


def test_pruning_keeps_the_newest_and_the_protected(tmp_path):
    run = RunFolder(tmp_path / "run")
    for step in (100, 200, 300, 400):
        save(run, step, protect=("step-000100",))
    assert run.checkpoint_steps() == [100, 300, 400]


def test_the_scorer_protects_what_the_pick_would_keep_now(tmp_path):
    run = RunFolder(tmp_path / "run")
    for step in (100, 200):
        save(run, step)
    config = resolve_config([], {"class_noun": "dog"}).config
    scorer = TrainingScorer(None, config, "folder", run, [], tmp_path / "cache", 32, torch.device("cpu"), lambda e: None)
    assert scorer.best_checkpoints() == ()  # nothing scored yet: plain pruning
    scorer._rows.update({
        "base": Row("base", 0, 0.0, 0.5, 0.0, 0.5),
        "step-000100": Row("step-000100", 100, 0.8, 0.5, 0.05, 0.5),  # learned, within the margins
        "step-000200": Row("step-000200", 200, 0.9, 0.2, 0.6, 0.2),  # more fidelity, but drifted: over-trained
    })
    assert scorer.best_checkpoints() == ("step-000100",)
    save(run, 300, protect=scorer.best_checkpoints())
    save(run, 400, protect=scorer.best_checkpoints())
    assert 100 in run.checkpoint_steps() and run.checkpoint_steps()[-2:] == [300, 400]
