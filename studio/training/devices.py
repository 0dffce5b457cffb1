"""Which devices a shared studio trains on: one job at a time on each (`STUDIO_DEVICES=cuda:0,cuda:1`).

Torch is imported only when a list is checked or the visible GPUs are counted, so importing the engine stays cheap.
"""
from __future__ import annotations

import re
from typing import Sequence

_DEVICE = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def parse_devices(text: str) -> list[str]:
    """"cuda:0, cuda:1" -> ["cuda:0", "cuda:1"]; a malformed entry is an error that names it. The same CPU may be
    listed twice (two jobs at once on one CPU: what tests and small models use)."""
    devices = [part.strip() for part in text.split(",") if part.strip()]
    if not devices:
        raise ValueError("STUDIO_DEVICES is empty: list devices like cuda:0,cuda:1 (or leave it unset for every GPU)")
    for device in devices:
        if not _DEVICE.match(device):
            raise ValueError(f"STUDIO_DEVICES: {device!r} is not a device; use cpu, mps, cuda or cuda:N "
                             "(e.g. STUDIO_DEVICES=cuda:0,cuda:1)")
    gpus = [d for d in devices if d.startswith("cuda")]
    if len(set(gpus)) != len(gpus):
        raise ValueError(f"STUDIO_DEVICES lists a GPU twice ({', '.join(gpus)}): two jobs on one GPU would share its "
                         "memory and each could run out; list each GPU once")
    return devices


def check_devices(devices: Sequence[str]) -> None:
    """Refuse a device this machine does not have, before any job is queued on it."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for device in devices:
        if device.startswith("cuda"):
            index = int(device.split(":")[1]) if ":" in device else 0
            if index >= count:
                have = f"cuda:0 to cuda:{count - 1}" if count else "no CUDA GPU"
                raise ValueError(f"STUDIO_DEVICES: {device} does not exist here ({have}); list the GPUs this machine "
                                 "has, or leave STUDIO_DEVICES unset to use all of them")
        if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError("STUDIO_DEVICES: mps is not available on this machine")


def visible_devices(preferred: str | None = None) -> list[str | None]:
    """The default: every visible GPU, one job each; else one job on `preferred` (None: the best available)."""
    if preferred:
        return [preferred]
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i}" for i in range(count)] if count > 1 else [None]
