"""One run across several processes (`accelerate launch` / `torchrun`): data parallel, as DDP does it.

Every process holds the whole model and the same seeded RNGs, so each draws the
same *global* batch (indices, flips, noise, timesteps) and trains on its own
rows of it; gradients are averaged across processes before each optimizer step.
The result is the run one process would make with the same global batch (up to
float summation order), which is also why a checkpoint resumes on any number
of processes: `batch_size` always means the global batch, so the learning rate
needs no scaling rule.

The process group is set up by accelerate (`PartialState`, gloo on CPUs, NCCL
on CUDA), from the environment `accelerate launch` or `torchrun` gives each
process; nothing here launches processes. Only the main process writes: events,
class-image progress, previews, checkpoints, scores and exports.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterable

import torch

LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
LR_SCALING = "none: batch_size is the global batch, so the same settings train the same way on any number of processes"


class DistributedSetupError(ValueError):
    pass


class PeerLostError(RuntimeError):
    """Another process of the run is gone (killed, out of memory, a lost node): this one cannot go on alone."""


@contextlib.contextmanager
def _collective(what: str):
    """gloo and NCCL report a dead peer as a bare RuntimeError from whichever collective noticed it first."""
    try:
        yield
    except RuntimeError as exc:
        raise PeerLostError(f"{what} failed: {str(exc).splitlines()[0][:200]}") from exc


@dataclass(frozen=True)
class World:
    """This process's place in the run: `size` processes, this one is `rank` (0 is the main process)."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def check_batch(self, batch_size: int) -> None:
        """Each process takes an equal share of the global batch; say so before any work if it can't."""
        if batch_size % self.size:
            fits = ", ".join(str(self.size * k) for k in (1, 2, 4))
            raise DistributedSetupError(
                f"batch_size = {batch_size} is the global batch, and {self.size} processes can't share it evenly: "
                f"use --set batch_size={self.size} (or {fits}), or launch a number of processes that divides "
                f"{batch_size}")

    def per_process(self, batch_size: int) -> int:
        return batch_size // self.size

    def rows(self, batch_size: int, parts: int) -> list[int]:
        """This process's rows of a global batch laid out as `parts` blocks of `batch_size` ([instance, class]):
        the same share of each block, so every process's loss has the same instance/class mix."""
        share = self.per_process(batch_size)
        return [part * batch_size + self.rank * share + i for part in range(parts) for i in range(share)]

    def mine(self, index: int) -> bool:
        """Work split by index (class images): process r does r, r+size, r+2*size..."""
        return index % self.size == self.rank

    def device(self, preferred: str | None) -> str | None:
        """Each process on its own GPU (`cuda:LOCAL_RANK`); a CPU or an explicit index is left as asked."""
        if not self.distributed:
            return preferred
        if preferred in (None, "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}"
        return preferred

    def describe(self, config) -> dict:
        """What config.json records, and the CLI prints, about how the run is split."""
        return {"processes": self.size, "global_batch": config.batch_size,
                "per_process_batch": self.per_process(config.batch_size),
                "gradient_accumulation": config.gradient_accumulation, "lr_scaling": LR_SCALING}

    # -- collectives: no-ops for one process ---------------------------------------------
    def average_(self, tensors: Iterable[torch.Tensor]) -> None:
        """Average tensors across processes in place, in one flat all-reduce (what DDP's buckets do)."""
        tensors = list(tensors)
        if not self.distributed or not tensors:
            return
        import torch.distributed as dist

        flat = torch.cat([t.reshape(-1).float() for t in tensors])
        with _collective("averaging the gradients"):
            dist.all_reduce(flat)
        flat /= self.size
        offset = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t))
            offset += n

    def broadcast_(self, tensors: Iterable[torch.Tensor]) -> None:
        """Make every process hold the main process's values (DDP does this to the weights when it starts)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        with _collective("sharing the initial weights"):
            for t in tensors:
                dist.broadcast(t.data, src=0)

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            with _collective("waiting for the other processes"):
                dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every process when any process says True (Ctrl-C reaches each one at a slightly different step:
        they must all stop at the same one, or the others would wait for it forever)."""
        if not self.distributed:
            return flag
        import torch.distributed as dist

        value = torch.tensor([1.0 if flag else 0.0])
        with _collective("checking for a stop"):
            dist.all_reduce(value)
        return value.item() > 0


SINGLE = World()


def launched() -> bool:
    """Started by `accelerate launch` / `torchrun` with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def join_world(device: str | None = None) -> World:
    """This process's World: the single one, or, under a launcher, the process group accelerate sets up."""
    if not launched():
        return SINGLE
    _refuse_sharding_engines()
    if device and device.startswith("cuda:"):
        raise DistributedSetupError(
            f"--device {device} would put every process on one GPU: under a launcher each process takes its own "
            "(cuda:LOCAL_RANK); leave --device out, and choose the GPUs with CUDA_VISIBLE_DEVICES or the launcher's "
            "--gpu_ids")
    from accelerate import PartialState

    on_cpu = device == "cpu" or (not (device or "").startswith("cuda") and not torch.cuda.is_available())
    state = PartialState(cpu=on_cpu)
    if state.num_processes < 2:
        raise DistributedSetupError(
            f"WORLD_SIZE={os.environ.get('WORLD_SIZE')} but accelerate set up {state.num_processes} process "
            f"({state.distributed_type}); launch with `accelerate launch --multi_gpu --num_processes N -m studio train ...` "
            "or `torchrun --nproc_per_node N -m studio train ...`")
    return World(size=state.num_processes, rank=state.process_index, local_rank=state.local_process_index)


def _refuse_sharding_engines() -> None:
    """DeepSpeed ZeRO and FSDP shard the weights and optimizer across processes; the studio's loop replicates them
    (plain data parallel). Accepting such a config and quietly replicating would run out of memory far from the cause."""
    for variable, name in (("ACCELERATE_USE_DEEPSPEED", "DeepSpeed"), ("ACCELERATE_USE_FSDP", "FSDP")):
        if os.environ.get(variable, "false").lower() == "true":
            raise DistributedSetupError(
                f"{name} was chosen in the accelerate config, but the studio trains data parallel only (each process "
                "holds the whole model and optimizer): run `accelerate config` again with no DeepSpeed/FSDP, and fit "
                "a full fine-tune with gradient_checkpointing, use_8bit_adam and mixed precision, or train LoRA")
