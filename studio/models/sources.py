"""Where a base model comes from, decided before anything heavy is loaded.

A user names a base model as nothing (the built-in one), a local diffusers
folder, a single `.safetensors` checkpoint as A1111/ComfyUI users keep them, or
a Hugging Face hub id. `resolve_source` turns that text into a `ModelSource`
and refuses what must not be loaded: pickle files (arbitrary code on load)
unless a local user explicitly allows them, and on a shared Space anything
outside the allowed model folders.
"""
from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ASSETS_DIR = Path(__file__).resolve().parent.parent.parent / "assets"
BUILTIN_MODEL_DIR = ASSETS_DIR / "builtin-model"
BUILTIN_NAME = "builtin"

PICKLE_SUFFIXES = {".ckpt", ".bin", ".pt", ".pth", ".pkl"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelLoadError(ValueError):
    """A base model could not be used; the message says why and what to do."""


@dataclass(frozen=True)
class ModelSource:
    kind: Literal["builtin", "folder", "single_file", "hub"]
    location: str  # a path for local kinds, the repo id for the hub
    family: str  # "sd", "sdxl", "sd3" or "flux"; "auto" when only loading can tell (hub ids)
    config_dir: str | None = None  # diffusers config folder for single files (offline)
    allow_pickle: bool = False

    @property
    def label(self) -> str:
        return BUILTIN_NAME if self.kind == "builtin" else self.location


def model_fingerprint(source: ModelSource) -> str:
    """Identify a base model cheaply, without loading it: its location plus the sizes of its weight files (what keys
    the caches of the untouched model's class images, previews and scorecard pictures)."""
    parts = [source.kind, source.location]
    root = Path(source.location)
    if root.exists():
        files = [root] if root.is_file() else sorted(root.rglob("*.safetensors"))
        parts += [f"{p.relative_to(root) if root.is_dir() else p.name}:{p.stat().st_size}" for p in files]
    return "|".join(parts)


def resolve_source(
    spec: str | None,
    *,
    config_dir: str | None = None,
    allow_pickle: bool = False,
    allowed_roots: list[Path] | None = None,
) -> ModelSource:
    """Decide what `spec` names. `allowed_roots` (a shared Space) confines local paths."""
    if spec is None or spec.strip() in ("", BUILTIN_NAME):
        if not (BUILTIN_MODEL_DIR / "model_index.json").exists():
            raise ModelLoadError(f"the built-in model is missing from {BUILTIN_MODEL_DIR}; reinstall the studio")
        return ModelSource("builtin", str(BUILTIN_MODEL_DIR), "sd")
    spec = spec.strip()
    path = Path(spec).expanduser()
    if allowed_roots is not None and (path.is_absolute() or path.exists() or ".." in path.parts):
        path = path.resolve()
        if not any(path.is_relative_to(root.resolve()) for root in allowed_roots):
            raise ModelLoadError(f"{spec!r} is outside the model folders this studio may read; pick a listed model")
    if path.is_dir() and path.resolve() == BUILTIN_MODEL_DIR.resolve():  # named by its path: still the built-in
        return resolve_source(None)  # (its world's judge scores it, its prompts suit it)
    if path.is_dir():
        return ModelSource("folder", str(path), family_of_folder(path))
    if path.is_file():
        return _single_file_source(path, config_dir, allow_pickle)
    if _HUB_ID.match(spec) and not spec.endswith((".safetensors", ".ckpt")):
        return ModelSource("hub", spec, "auto")
    raise ModelLoadError(f"no model at {spec!r}: give a diffusers folder, a .safetensors file or a hub id like 'owner/name'")


def family_of_folder(path: Path) -> str:
    index = path / "model_index.json"
    if not index.exists():
        raise ModelLoadError(f"{path} is not a diffusers model folder (no model_index.json); point at the folder that has it")
    try:
        name = json.loads(index.read_text(encoding="utf-8")).get("_class_name", "")
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{index} is not valid JSON ({exc}); the download may be incomplete") from exc
    family = family_of_pipeline_name(name)
    if family is None:
        raise ModelLoadError(f"{path} holds a {name or 'unknown'} model; the studio trains Stable Diffusion 1.x/2.x, "
                             "SDXL, Stable Diffusion 3 / 3.5 and FLUX.1")
    return family


def family_of_pipeline_name(name: str) -> str | None:
    """A model_index.json's `_class_name` -> the studio's family (None: not one it trains)."""
    if name.startswith("Flux"):
        return "flux"
    if name.startswith("StableDiffusion3"):
        return "sd3"
    if "XL" in name:
        return "sdxl"
    if name.startswith("StableDiffusion"):
        return "sd"
    return None


def hub_family(repo_id: str) -> str | None:
    """A hub model's family from its model_index.json (one small download), or None when it cannot be read: the
    loaders then try the SD families and say what went wrong."""
    try:
        from huggingface_hub import hf_hub_download

        index = hf_hub_download(repo_id, "model_index.json")
        return family_of_pipeline_name(json.loads(Path(index).read_text(encoding="utf-8")).get("_class_name", ""))
    except Exception as exc:  # offline, gated, missing: the family loaders report it with advice
        if is_gated_error(exc):
            raise ModelLoadError(gated_advice(repo_id)) from exc
        return None


def is_gated_error(exc: Exception) -> bool:
    return "GatedRepo" in type(exc).__name__ or "gated" in str(exc).lower()


def gated_advice(repo_id: str) -> str:
    return (f"{repo_id!r} is a gated model: accept its licence on https://huggingface.co/{repo_id}, then log in "
            "(`hf auth login`, or set HF_TOKEN) and try again")


def _single_file_source(path: Path, config_dir: str | None, allow_pickle: bool) -> ModelSource:
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise ModelLoadError(
                f"{path.name} is a pickle file, which can run arbitrary code when loaded; convert it to .safetensors, "
                "or, on your own machine and only if you trust its source, allow pickle files explicitly"
            )
        family = "sdxl" if "xl" in path.name.lower() else "sd"  # pickles can't be inspected without unpickling
        return ModelSource("single_file", str(path), family, config_dir, allow_pickle=True)
    if suffix != ".safetensors":
        raise ModelLoadError(f"{path.name}: unsupported model file type {suffix!r}; use .safetensors")
    keys = safetensors_keys(path)
    if any(k.startswith(("double_blocks.", "model.diffusion_model.double_blocks.", "joint_blocks.",
                         "model.diffusion_model.joint_blocks.")) for k in keys):
        raise ModelLoadError(f"{path.name} is a FLUX.1 or SD3 checkpoint in one file; the studio loads those models "
                             "from a diffusers folder or a hub id (e.g. black-forest-labs/FLUX.1-dev): pass that instead")
    family = "sdxl" if any(k.startswith("conditioner.embedders.1") for k in keys) else "sd"
    if not any(k.startswith("model.diffusion_model.") for k in keys):
        raise ModelLoadError(f"{path.name} is not a Stable Diffusion checkpoint (no model.diffusion_model.* weights); "
                             "is it a LoRA? Load LoRAs on top of a base model instead")
    return ModelSource("single_file", str(path), family, config_dir)


def safetensors_keys(path: Path) -> list[str]:
    """Read a .safetensors header and check it describes the file: catches truncated downloads early."""
    return list(_safetensors_header(path))


def safetensors_parameters(path: Path) -> int:
    """How many numbers a .safetensors file holds, from its header alone."""
    import math

    return sum(math.prod(entry["shape"]) for entry in _safetensors_header(path).values())


def _safetensors_header(path: Path) -> dict:
    size = path.stat().st_size
    try:
        with path.open("rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            if header_len <= 0 or header_len > min(size - 8, 100_000_000):
                raise ValueError("header length out of range")
            header = json.loads(fh.read(header_len))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        ends = [int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"]
    except (struct.error, ValueError, UnicodeDecodeError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ModelLoadError(f"{path.name} is not a valid .safetensors file ({exc}); download it again") from exc
    if 8 + header_len + max(ends, default=0) > size:
        raise ModelLoadError(f"{path.name} is truncated ({size} bytes, its header needs more); download it again")
    return {k: v for k, v in header.items() if k != "__metadata__"}
