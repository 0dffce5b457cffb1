"""Training-state checkpoints that survive a crash at any moment.

A checkpoint is written into `step-XXXXXX.tmp/`, `state.json` last, then
renamed to `step-XXXXXX/`: a rename is atomic, so a folder without `.tmp` is
always complete. Older checkpoints are pruned only after the new one exists.
Resuming restores weights, optimizer, LR schedule, every RNG and the step, so
an interrupted run ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from studio.runs import CHECKPOINT_STATE as STATE
from studio.runs import TRAINABLE_FILE as WEIGHTS
from studio.runs import RunFolder
from studio.training.trainable import AdapterSettingError, adapter_of_state

OPTIMIZER = "optimizer.pt"
ADAPTER_KEY = "adapter"  # safetensors metadata of the trainable weights


class ResumeMismatchError(AdapterSettingError):
    pass


@dataclass
class LoopState:
    step: int
    samplers: dict[str, Any]
    bad_steps: int = 0


def save_checkpoint(
    run: RunFolder,
    *,
    trainable_state: dict[str, torch.Tensor],
    optimizer,
    lr_scheduler,
    generator: torch.Generator,
    loop: LoopState,
    keep: int,
    extra_writer=None,
    protect: Collection[str] = (),
) -> Path:
    """Write a complete checkpoint atomically; `extra_writer(folder)` adds inference files (LoRA, UNet).
    Then only the newest `keep` stay, and the checkpoints named in `protect` (the scorecard's best so far)."""
    final = run.checkpoint_dir(loop.step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        # the adapter type is recorded, so resuming with another one is refused before any state is touched
        save_file(trainable_state, str(tmp / WEIGHTS), metadata={ADAPTER_KEY: adapter_of_state(trainable_state) or "full"})
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "lr_scheduler": lr_scheduler.state_dict(),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy_rng": _numpy_state(),
            },
            tmp / OPTIMIZER,
        )
        if extra_writer is not None:
            extra_writer(tmp)
        (tmp / STATE).write_text(json.dumps({"step": loop.step, "samplers": loop.samplers, "bad_steps": loop.bad_steps}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a half checkpoint that looks complete
        raise
    for old in run.checkpoint_dirs()[:-keep]:
        if old.name not in protect:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(folder: Path, *, optimizer, lr_scheduler, generator: torch.Generator) -> tuple[dict[str, torch.Tensor], LoopState]:
    """Restore optimizer, schedule and RNGs in place; return the trainable weights and loop state."""
    state = json.loads((folder / STATE).read_text())
    weights = load_file(str(folder / WEIGHTS))
    _refuse_other_trainable(folder, weights, optimizer)
    blob = torch.load(folder / OPTIMIZER, map_location="cpu", weights_only=True)  # tensors and numbers only: no pickle code
    optimizer.load_state_dict(blob["optimizer"])
    lr_scheduler.load_state_dict(blob["lr_scheduler"])
    generator.set_state(blob["generator"])
    torch.set_rng_state(blob["torch_rng"])
    if blob["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["cuda_rng"])
    np.random.set_state(_numpy_from(blob["numpy_rng"]))
    return weights, LoopState(int(state["step"]), state["samplers"], int(state.get("bad_steps", 0)))


def checkpoint_adapter(folder: Path) -> str:
    """The adapter type a checkpoint was saved with ("full" for a full fine-tune)."""
    with safe_open(str(folder / WEIGHTS), "pt") as fh:
        recorded = (fh.metadata() or {}).get(ADAPTER_KEY)
        return recorded or adapter_of_state(fh.keys()) or "full"  # checkpoints older than the record: from key names


def _refuse_other_trainable(folder: Path, weights: dict[str, torch.Tensor], optimizer) -> None:
    """The optimizer was built for this run's weights: a checkpoint of other weights would fail obscurely inside it."""
    current = sorted(tuple(p.shape) for group in optimizer.param_groups for p in group["params"])
    if sorted(tuple(t.shape) for t in weights.values()) != current:
        raise ResumeMismatchError(
            f"checkpoint {folder.name} holds adapter = {checkpoint_adapter(folder)!r} weights that do not match what "
            "this run trains (were adapter, lora_rank, conv_rank, method or train_text_encoder changed?): resume with "
            "the settings it was saved with, or start a new run")


def _numpy_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "cached": cached}


def _numpy_from(d: dict):
    return (d["name"], d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"], d["cached"])
