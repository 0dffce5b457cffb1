"""Device, precision and optimizer choices: the hardware facts, decided once per run.

Trainable weights always stay fp32 and only the forward pass runs under
autocast, so the optimizer never sees fp16 gradients ("Attempting to unscale
FP16 gradients" is what happens when trainable weights are cast to half).
Nothing here touches process-wide state (no accelerate.Accelerator), so one
studio process can run an fp16 job after a bf16 one.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


def pick_device(preferred: str | None = None) -> torch.device:
    if preferred:
        return torch.device(preferred)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass(frozen=True)
class Precision:
    name: str  # "no", "fp16", "bf16"
    device: torch.device

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.name)

    @property
    def frozen_dtype(self) -> torch.dtype:
        """Frozen modules (VAE, a frozen text encoder) can live in half precision on an accelerator."""
        return self.autocast_dtype if self.device.type == "cuda" and self.autocast_dtype else torch.float32

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def grad_scaler(self):
        """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
        enabled = self.name == "fp16" and self.device.type == "cuda"
        return torch.amp.GradScaler("cuda", enabled=enabled)


def pick_precision(requested: str, device: torch.device) -> tuple[Precision, str | None]:
    """Resolve "auto" and refuse what the device cannot do; returns (precision, notice or None)."""
    if requested == "auto":
        if device.type == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            name = "no"  # CPU autocast is slower than fp32 on most CPUs
        return Precision(name, device), None
    if requested == "fp16" and device.type == "cpu":
        return Precision("no", device), "fp16 needs a GPU; training in fp32 on the CPU instead"
    return Precision(requested, device), None


def make_optimizer(param_groups: list[dict], *, use_8bit: str, device: torch.device, betas=(0.9, 0.999), weight_decay=1e-2):
    """8-bit AdamW (bitsandbytes) on CUDA saves ~75% of optimizer memory; elsewhere torch's AdamW.

    `use_8bit`: "auto" takes 8-bit where it can and falls back quietly (the default: a CPU run has nothing to be
    told); "on" says so when it can't; "off" never uses it."""
    asked = use_8bit == "on"
    if use_8bit in ("auto", "on") and device.type == "cuda":
        try:
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(param_groups, betas=betas, weight_decay=weight_decay), None
        except Exception as exc:  # a broken bitsandbytes install must not stop training
            notice = f"8-bit Adam unavailable ({exc}); using torch AdamW" if asked else None
            return torch.optim.AdamW(param_groups, betas=betas, weight_decay=weight_decay), notice
    notice = "8-bit Adam needs CUDA; using torch AdamW" if asked else None
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(param_groups, betas=betas, weight_decay=weight_decay, **fused), notice


# Bytes a denoiser weight takes on the GPU while training: fp32 unless quantized (the loop moves an unquantized
# denoiser without casting it, as the weights it adapts or fine-tunes stay fp32), or 8 / 4 bits (NF4 plus its block
# constants with bitsandbytes' double quantisation: about 0.53 byte). Frozen text encoders are cast to the autocast
# dtype (2 bytes) unless mixed precision is off, and take nothing once offloaded after the prompts are cached.
_WEIGHT_BYTES = {"none": 4.0, "int8": 1.0, "nf4": 0.53}
GIB = 1024**3


class DeviceTooSmall(ValueError):
    """The base model's weights alone would not fit the GPU with these settings; the message says what to pick."""


def weights_on_device(source, config) -> int | None:
    """Bytes of frozen weights a run keeps on the GPU, counted from the weight files' headers (nothing loaded);
    None when the model is not a local folder (a hub model is counted once downloaded, at the next run)."""
    from pathlib import Path

    from studio.models.families import FAMILIES
    from studio.models.sources import safetensors_parameters

    root = Path(source.location)
    family = FAMILIES.get(source.family)
    if family is None or not root.is_dir():
        return None
    count = lambda pattern: sum(safetensors_parameters(p) for p in root.glob(pattern))
    encoder_bytes = 0 if config.offload_text_encoders else 4 if config.mixed_precision == "no" else 2
    return int(count(f"{family.denoiser_name}/*.safetensors") * _WEIGHT_BYTES[config.quantize]
               + count("text_encoder*/*.safetensors") * encoder_bytes)


def check_fits(source, config, device: torch.device, total_bytes: int | None = None) -> None:
    """Refuse, before loading, a run whose frozen weights alone exceed the GPU (activations, the adapter and the
    optimizer come on top: benchmarks.flow_memory estimates them). CPU runs use the machine's memory: not checked."""
    if device.type != "cuda" and total_bytes is None:
        return
    needed = weights_on_device(source, config)
    total = total_bytes if total_bytes is not None else torch.cuda.get_device_properties(device).total_memory
    if needed is None or needed <= 0.9 * total:
        return
    raise DeviceTooSmall(
        f"{source.label}: its weights alone take about {needed / GIB:.1f} GiB on the GPU with quantize = "
        f"{config.quantize!r}{'' if config.offload_text_encoders else ' and the text encoders kept there'}; this GPU "
        f"has {total / GIB:.1f} GiB. Pick a 24 GB preset (flux-24gb or sd3-24gb: the transformer in 4 bits, text "
        "encoders offloaded after caching), or a smaller model")
