"""What a finished run offers to download, each file labelled with what it is for.

A full fine-tune's diffusers folder is many files with repeated names (three
`config.json`...), useless as a flat list: it is offered as one zip, made on
first request and kept beside the outputs until they change.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from studio.runs import DETAIL_VAE_DIR, EMBEDDINGS_FILE, FULL_MODEL_DIR, LORA_FILE, RunFolder, a1111_embedding_file

DOWNLOADS = "downloads"  # <run>/downloads/: files made for download (the zipped model folder)
MODEL_CARD = "README.md"
SAMPLES = "samples.png"


@dataclass(frozen=True)
class Download:
    path: Path
    label: str  # what the file is for, in a user's words

    @property
    def name(self) -> str:
        return self.path.name


# diffusers' `load_lora_weights` reads LoRA, LoCon and DoRA; for LoKr and LoHa the file holds peft's weights and
# config, which this studio reads back (studio.models.lora_formats), and the kohya-layout file is the one to share.
DIFFUSERS_READS = ("lora", "locon", "dora")


def run_downloads(run: RunFolder, file_stem: str, adapter: str = "lora", token: str = "",
                  kohya_format: bool = True) -> list[Download]:
    """The run's outputs as downloads, most useful first; [] before the run has finished. `token`: a learned
    token's ("<sks>"), whose A1111 embedding is `sks.safetensors`; `kohya_format` False: the base model's family
    (SD3, FLUX) has no kohya file, and ComfyUI reads diffusers' LoRA file."""
    out = run.output
    if not out.is_dir():
        return []
    found: list[Download] = []
    a1111_embedding = a1111_embedding_file(token) if token else ""
    if (out / EMBEDDINGS_FILE).is_file():
        found.append(Download(out / EMBEDDINGS_FILE, f"embedding for diffusers: `pipe.load_textual_inversion(...)`, "
                                                     f"then write {token or 'its token'} in the prompt"))
    if (out / LORA_FILE).is_file():
        comfy = "" if kohya_format else " and ComfyUI: put it in `models/loras`"
        found.append(Download(out / LORA_FILE, f"LoRA for diffusers: `pipe.load_lora_weights(...)`{comfy}" if adapter in
                              DIFFUSERS_READS else f"{adapter} weights for DreamBooth Studio (diffusers cannot load "
                              f"{adapter}; use the kohya file in A1111 / ComfyUI)"))
    for path in sorted(out.glob("*.safetensors")):
        if path.name in (LORA_FILE, EMBEDDINGS_FILE):
            continue
        if path.name == a1111_embedding:
            found.append(Download(path, f"embedding for A1111 / ComfyUI: put it in `embeddings`, then write "
                                        f"`{path.stem}` in the prompt"))
            continue
        if path.stem.endswith("-kohya"):
            found.append(Download(path, f"{'LoRA' if adapter == 'lora' else adapter} for A1111 / ComfyUI / kohya: "
                                        "put it in `models/Lora`"))
        else:
            found.append(Download(path, "the whole model in one file, for A1111 / ComfyUI: put it in `models/Stable-diffusion`"))
    if (out / FULL_MODEL_DIR).is_dir():
        found.append(Download(zipped_model(run, file_stem),
                              "the whole model for diffusers: unzip, then `DiffusionPipeline.from_pretrained(folder)`"))
    if (out / DETAIL_VAE_DIR).is_dir():
        found.append(Download(zipped_folder(run, DETAIL_VAE_DIR, f"{file_stem}-vae"),
                              "the detail stage's VAE for diffusers: unzip, then "
                              "`AutoencoderKL.from_pretrained(folder)` and pass it as the pipeline's `vae=`"))
    if (out / MODEL_CARD).is_file():
        found.append(Download(out / MODEL_CARD, "model card: trigger phrase, settings, samples (for the Hugging Face Hub)"))
    if (out / SAMPLES).is_file():
        found.append(Download(out / SAMPLES, "sample grid: previews from the base model to the last step"))
    return found


def zipped_model(run: RunFolder, file_stem: str) -> Path:
    """`output/model/` as `<stem>-diffusers.zip` (members under `<stem>-diffusers/`), rebuilt when the model is newer."""
    return zipped_folder(run, FULL_MODEL_DIR, f"{file_stem}-diffusers")


def zipped_folder(run: RunFolder, name: str, stem: str) -> Path:
    """`output/<name>/` as `<stem>.zip` (members under `<stem>/`), rebuilt when a file in it is newer."""
    source = run.output / name
    folder = run.path / DOWNLOADS
    target = folder / f"{stem}.zip"
    files = sorted(p for p in source.rglob("*") if p.is_file())
    newest = max((p.stat().st_mtime for p in files), default=0.0)
    if target.is_file() and target.stat().st_mtime >= newest:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".zip.tmp")
    # Weights barely compress; storing them keeps a multi-GB zip fast to make and to open.
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in files:
            archive.write(path, f"{target.stem}/{path.relative_to(source).as_posix()}")
    os.replace(tmp, target)
    return target
