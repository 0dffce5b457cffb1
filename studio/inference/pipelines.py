"""Loaded pipelines, kept and reused across generate / compare / inpaint calls.

A base model is loaded once; LoRAs (LoCon and DoRA too) are attached to it as
named adapters and switched per call (never by reloading the base); full
fine-tunes and LoKr / LoHa adapters get their own components (their adapter
always on). All drawing goes through one lock per cache, because the active
adapter is state of the shared UNet: a LoRA activated for one user's request
must never be active in another's.
"""
from __future__ import annotations

import contextlib
import inspect
import threading
from pathlib import Path
from collections import OrderedDict

import torch

from studio.models.families import Components, family_of_pipeline, load_components
from studio.inference.models import ModelRef
from studio.inference.schedulers import SCHEDULERS
from studio.models.sources import ModelSource, resolve_source



def make_scheduler(name: str, config: dict, family=None):
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; use one of: {', '.join(SCHEDULERS)}")
    if family is not None and family.schedulers is not None:
        if name not in family.schedulers:
            raise ValueError(f"{family.title} draws with its flow-matching sampler, not {name!r}: pick one of "
                             f"{', '.join(family.schedulers)}")
        return getattr(diffusers, config.get("_class_name", "FlowMatchEulerDiscreteScheduler")).from_config(config)
    class_name = SCHEDULERS[name] or config.get("_class_name", "DDIMScheduler")
    scheduler_class = getattr(diffusers, class_name)
    overrides = {}
    if "clip_sample" in inspect.signature(scheduler_class.__init__).parameters:
        # Latents are not bounded to [-1, 1]: DDIM/DDPM clip x0 there by default and turn the picture into
        # noise when the base's own config (e.g. a DPM++ one) does not switch it off, as SD 1.x configs do.
        overrides["clip_sample"] = False
    return scheduler_class.from_config(config, **overrides)


def build_pipeline(comps: Components, scheduler: str | None = None, kind: str = "txt2img", device=None):
    """The one way the studio makes a pipeline over loaded parts: previews, class images, export and drawing.
    `scheduler` None: the family's default (DPM-Solver++ for SD: clean pictures in 20 steps, so previews and class
    images stay cheap)."""
    family = comps.family
    chosen = make_scheduler(scheduler or family.default_scheduler, comps.scheduler_config, family)
    pipe = family.build_pipeline(comps, chosen, kind)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device) if device is not None else pipe


@contextlib.contextmanager
def drawing_mode(comps: Components):
    """Draw with a model that is training: its modules in eval mode, and text encoders that were moved off the GPU
    after caching (offload_text_encoders) back beside the denoiser; all as they were afterwards."""
    modules = [comps.denoiser, *comps.text_encoders]
    modes = [m.training for m in modules]
    device = next(comps.denoiser.parameters()).device
    away = [(e, next(e.parameters()).device) for e in comps.text_encoders if next(e.parameters()).device != device]
    try:
        for m in modules:
            m.eval()
        for encoder, _ in away:
            encoder.to(device)
        yield
    finally:
        for encoder, home in away:
            encoder.to(home)
        for m, mode in zip(modules, modes):
            m.train(mode)


def native_size(pipe) -> int:
    """The pixel size a pipeline's model was trained at."""
    family = family_of_pipeline(pipe)
    return family.native_size(getattr(pipe, family.denoiser_name), pipe.vae)


def call_kwargs(pipe) -> dict:
    """What every drawing call passes besides prompt, steps, guidance and size (T5's length for SD3 / FLUX)."""
    return family_of_pipeline(pipe).draw_kwargs(pipe)


class PipelineCache:
    def __init__(self, device: torch.device, max_models: int = 3) -> None:
        self.device = device
        self.max_models = max_models
        self.lock = threading.RLock()
        self._models: OrderedDict[str, Components] = OrderedDict()
        self._adapters: dict[str, set[str]] = {}
        self._vaes: dict[str, tuple[tuple, object]] = {}  # the detail stages' VAEs, by folder
        # What each cached model or adapter was loaded from, as (path, mtime, size): a run's output changes under a
        # stable key when the user makes another checkpoint its output, and must then be loaded again.
        self._loaded_from: dict[str, tuple] = {}

    def _own_components(self, ref: ModelRef) -> Components | None:
        """The components of a model that has its own (a full fine-tune, its checkpoint, a LoKr / LoHa); None for the
        base model and the LoRAs switched on it."""
        files = _files_of(ref)  # one look at the files per drawing call
        if self._loaded_from.get(ref.key, files) != files:
            self._models.pop(ref.key, None)  # rewritten since it was loaded: load it anew
        self._loaded_from[ref.key] = files
        if ref.full_model_dir is not None:
            return self._load(ref.key, lambda: load_components(resolve_source(str(ref.full_model_dir))))
        if ref.unet_state_file is not None:
            return self._load(ref.key, lambda: self._with_unet_state(ref))
        if ref.embeddings_file is not None:
            return self._load(ref.key, lambda: self._with_embeddings(ref))
        if _is_lycoris(ref):
            return self._load(ref.key, lambda: self._with_lycoris(ref))
        return None

    def pipeline(self, ref: ModelRef, scheduler: str | None = "default", kind: str = "txt2img"):
        """A pipeline drawing with `ref`'s weights (its LoRA active, others off). Call with `self.lock` held."""
        own = self._own_components(ref)
        comps = own or self._load(_base_key(ref.base), lambda: load_components(ref.base))
        pipe = build_pipeline(comps, scheduler, kind)
        if own is None:  # the shared base: switch to this ref's LoRA, or turn every adapter off
            self._activate_lora(pipe, ref)
        if ref.vae_dir is not None:  # this pipeline only: the components (maybe the shared base) keep their VAE
            pipe.vae = self._detail_vae(ref, comps.vae.dtype)
        return pipe

    def _detail_vae(self, ref: ModelRef, dtype):
        """The detail stage's VAE, loaded once per run folder (again when its files change)."""
        from diffusers import AutoencoderKL

        key, files = f"vae:{ref.vae_dir}", _stats(_folder_files(ref.vae_dir))
        cached = self._vaes.get(key)
        if cached is None or cached[0] != files:
            vae = AutoencoderKL.from_pretrained(str(ref.vae_dir), torch_dtype=dtype).to(self.device).eval()
            self._vaes[key] = cached = (files, vae)
        return cached[1]

    def _load(self, key: str, loader) -> Components:
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        while len(self._models) >= self.max_models:
            old, _ = self._models.popitem(last=False)
            self._adapters.pop(old, None)
        comps = loader()
        for module in [comps.denoiser, comps.vae, *comps.text_encoders]:
            module.to(self.device).eval()
        self._models[key] = comps
        return comps

    def _with_unet_state(self, ref: ModelRef) -> Components:
        from safetensors.torch import load_file

        base = load_components(ref.base)
        state = load_file(str(ref.unet_state_file))
        prefix = base.family.denoiser_name + "."  # the checkpoint's keys are the run's module names
        base.denoiser.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)},
                                      strict=False)
        for i, encoder in enumerate(base.text_encoders):
            prefix = f"text_encoder_{i}."
            part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if part:
                encoder.load_state_dict(part, strict=False)
        return base

    def _with_embeddings(self, ref: ModelRef) -> Components:
        """A learned token (and pivotal tuning's LoRA, always on) in a base of its own: the token is added to the
        tokenizer and text encoder, which would otherwise make it everyone's, in every model sharing that base."""
        from studio.models.embeddings import load_into_pipeline

        comps = load_components(ref.base)
        pipe = build_pipeline(comps)
        load_into_pipeline(pipe, ref.embeddings_file)
        comps.tokenizers = [pipe.tokenizer, *([pipe.tokenizer_2] if len(comps.tokenizers) > 1 else [])]
        comps.text_encoders = [pipe.text_encoder, *([pipe.text_encoder_2] if len(comps.text_encoders) > 1 else [])]
        if ref.lora_file is not None:
            from studio.models.lora_formats import inject_adapter_file, load_lora_for_inference

            if _is_lycoris(ref):
                inject_adapter_file(comps.denoiser, comps.text_encoders, ref.lora_file, _adapter_name(ref.key))
            else:
                load_lora_for_inference(pipe, ref.lora_file, _adapter_name(ref.key))
        return comps

    def _with_lycoris(self, ref: ModelRef) -> Components:
        """LoKr / LoHa get a base of their own with the adapter always on: diffusers' adapter switching is
        LoRA's, and a second adapter type in the shared UNet would be one more way to leak into others' pictures."""
        from studio.models.lora_formats import inject_adapter_file

        comps = load_components(ref.base)
        inject_adapter_file(comps.denoiser, comps.text_encoders, ref.lora_file, _adapter_name(ref.key))
        return comps

    def _activate_lora(self, pipe, ref: ModelRef) -> None:
        """Adapters live in the shared UNet: switch to `ref`'s one (loading it once), or turn them all off."""
        loaded = self._adapters.setdefault(_base_key(ref.base), set())
        if ref.lora_file is None:
            if loaded:
                pipe.disable_lora()
            return
        name, files = _adapter_name(ref.key), _files_of(ref)
        if name in loaded and self._loaded_from.get(name) != files:  # the file was rewritten since
            pipe.delete_adapters([name])
            loaded.discard(name)
        if name not in loaded:
            self._loaded_from[name] = files
            from studio.models.lora_formats import load_lora_for_inference

            load_lora_for_inference(pipe, ref.lora_file, name)
            loaded.add(name)
        pipe.enable_lora()
        pipe.set_adapters([name])


def _is_lycoris(ref: ModelRef) -> bool:
    """A LoKr / LoHa the studio trained. Anything unreadable is left to the LoRA loader, which says what is wrong."""
    from safetensors import SafetensorError

    from studio.models.lora_formats import studio_adapter_spec

    file = ref.lora_file
    if file is None or not file.is_file() or file.suffix.lower() != ".safetensors":
        return False
    try:
        return studio_adapter_spec(file) is not None
    except (SafetensorError, OSError, ValueError):  # a damaged file, or metadata that is not JSON
        return False


def _base_key(source: ModelSource) -> str:
    return f"base:{source.kind}:{source.location}"


def _files_of(ref: ModelRef) -> tuple:
    """Where `ref`'s own weights come from, with each file's mtime and size (nothing for the base model)."""
    paths = [p for p in (ref.lora_file, ref.unet_state_file, ref.embeddings_file) if p is not None]
    if ref.full_model_dir is not None:
        paths += _folder_files(ref.full_model_dir)
    return _stats(paths)  # (a detail stage's VAE is tracked on its own: _detail_vae)


def _folder_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file())


def _stats(paths: list[Path]) -> tuple:
    """Each file with its mtime and size: a file rewritten since it was loaded must be loaded again."""
    stats = []
    for path in paths:
        try:
            stat = Path(path).stat()
            stats.append((str(path), stat.st_mtime_ns, stat.st_size))
        except OSError:  # gone: whoever loads it says so
            stats.append((str(path), None, None))
    return tuple(stats)


def _adapter_name(key: str) -> str:
    return "a_" + "".join(c if c.isalnum() else "_" for c in key)
