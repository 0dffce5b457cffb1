"""A run's outputs: written to a temporary folder, reloaded to verify, then renamed into place.

LoRA runs give diffusers' `pytorch_lora_weights.safetensors` and a kohya /
A1111 / ComfyUI file; full runs give a diffusers folder (and optionally one
single `.safetensors`); textual inversion gives `learned_embeds.safetensors`
(diffusers) and an A1111 / ComfyUI embedding; pivotal tuning gives both the
embeddings and the LoRA files. Every run gets a model card (with its scorecard).
"Finished" is only ever reported after this module has read the files back.

When the scorecard (or the user) keeps an earlier checkpoint, its weights
become `output/` and the last step's files move, whole, to `output/last/`;
switching back to the last step moves them back.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from studio.config import ResolvedConfig
from studio.models.families import Components
from studio.models.sources import ModelSource
from studio.runs import (DETAIL_VAE_DIR, EMBEDDINGS_FILE, FULL_MODEL_DIR, LAST_DIR, LORA_FILE, TRAINABLE_FILE, RunFolder,
                         a1111_embedding_file)
from studio.training.trainable import Trainable




class ExportError(RuntimeError):
    pass


def write_inference_files(folder: Path, comps: Components, trainable: Trainable, config) -> None:
    """What generate/compare need from a checkpoint: the adapter and token files (full runs use trainable.safetensors)."""
    if trainable.has_adapter:
        _save_lora(folder, comps, trainable, config, {})
    if trainable.token is not None:
        _save_embeddings(folder, comps, trainable, config)


def _save_embeddings(folder: Path, comps: Components, trainable: Trainable, config) -> dict[str, Path]:
    from studio.models.embeddings import save_embeddings
    from studio.training.new_tokens import new_token_embeddings

    vectors = [e.vectors for e in new_token_embeddings(comps.text_encoders)]
    return save_embeddings(folder, trainable.token, vectors, diffusers_name=EMBEDDINGS_FILE,
                           a1111_name=a1111_embedding_file(config.token))


def _save_lora(folder: Path, comps: Components, trainable: Trainable, config, metadata: dict) -> dict[str, Path]:
    from peft import get_peft_model_state_dict

    from studio.models.lora_formats import save_lora_files
    from studio.training.trainable import conv_rank_alpha

    text = [get_peft_model_state_dict(te) if f"text_encoder_{i}" in trainable.modules and config.train_text_encoder
            else None for i, te in enumerate(comps.text_encoders)]
    adapter = trainable.adapter or "lora"
    return save_lora_files(folder, comps.family, get_peft_model_state_dict(comps.denoiser), text,
                           rank=config.lora_rank, alpha=config.lora_alpha, metadata=metadata, adapter=adapter,
                           conv=conv_rank_alpha(config) if adapter == "locon" else None)


def export_outputs(run: RunFolder, comps: Components, trainable: Trainable, resolved: ResolvedConfig, *, source: ModelSource,
                   scorecard: str = "") -> list[str]:
    """Write, verify, then atomically publish the run's `output/`; returns paths relative to the run folder."""
    tmp, written = _write_verified(run, comps, trainable, resolved, source, scorecard)
    final = run.output
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return [run.relative(final / p.relative_to(tmp)) for p in written]


def export_checkpoint(run: RunFolder, comps: Components, trainable: Trainable, resolved: ResolvedConfig, *,
                      source: ModelSource, checkpoint: Path, scorecard: str = "") -> list[str]:
    """Make a checkpoint's weights the run's output; the last step's files go to (or stay in) `output/last/`.
    `trainable` is loaded with the checkpoint's weights."""
    trainable.load_state_dict(load_file(str(checkpoint / TRAINABLE_FILE)))
    note = (f"This output holds checkpoint **{checkpoint.name}**; the last step's files are in `{LAST_DIR}/`.\n\n")
    tmp, written = _write_verified(run, comps, trainable, resolved, source, note + scorecard)
    final = run.output
    last = final / LAST_DIR if (final / LAST_DIR).is_dir() else final  # the output is the last step's until now
    if last.is_dir():
        os.replace(last, tmp / LAST_DIR)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return [run.relative(final / p.relative_to(tmp)) for p in written]


def restore_last(run: RunFolder) -> list[str]:
    """Make the last step's files the output again (after an earlier checkpoint was kept)."""
    final, last = run.output, run.output / LAST_DIR
    if not last.is_dir():
        return _relative(run, final)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.replace(last, tmp)
    shutil.rmtree(final)
    os.replace(tmp, final)
    return _relative(run, final)


def _relative(run: RunFolder, folder: Path) -> list[str]:
    return [run.relative(p) for p in sorted(folder.iterdir())] if folder.is_dir() else []


def _write_verified(run: RunFolder, comps: Components, trainable: Trainable, resolved: ResolvedConfig,
                    source: ModelSource, scorecard: str) -> tuple[Path, list[Path]]:
    """The outputs of `trainable`'s current weights, written and read back in `output.tmp/`."""
    config = resolved.config
    final = run.output
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    written: list[Path] = []
    if trainable.token is not None:
        written += list(_save_embeddings(tmp, comps, trainable, config).values())
    if trainable.has_adapter:
        written += _export_lora(tmp, comps, trainable, config, source)
    elif trainable.method == "full":
        written += _export_full(tmp, comps, config)  # its model/vae is the detail stage's, when there was one
    if config.detail_stage and trainable.method != "full":
        from studio.training.detail import save_detail_vae

        written.append(save_detail_vae(comps.vae, tmp / DETAIL_VAE_DIR))
    written.append(write_model_card(tmp, run, resolved, source, scorecard, family=comps.family))
    verify_outputs(tmp, trainable.method, comps)
    return tmp, written


def _export_lora(folder: Path, comps, trainable, config, source) -> list[Path]:
    metadata = {"base_model": source.label, "trigger": config.resolved_instance_prompt, "class_noun": config.class_noun,
                "output_name": f"{config.file_stem}-kohya"}
    return list(_save_lora(folder, comps, trainable, config, metadata).values())


def _export_full(folder: Path, comps, config) -> list[Path]:
    from studio.inference.pipelines import build_pipeline

    pipe = build_pipeline(comps)
    model_dir = folder / FULL_MODEL_DIR
    pipe.save_pretrained(model_dir, safe_serialization=True)
    written = [model_dir]
    if config.save_single_file:
        from studio.models.single_file import export_single_file

        path = folder / f"{config.file_stem}.safetensors"  # named for what it is: A1111 lists models by file name
        export_single_file(comps, path)
        written.append(path)
    return written


def verify_outputs(folder: Path, method: str, comps: Components) -> None:
    """Read what was written back; a file that does not load is an error, not a finished run."""
    try:
        if method in ("textual_inversion", "pivotal"):
            from studio.models.embeddings import read_embeddings

            _, vectors = read_embeddings(folder / EMBEDDINGS_FILE)
            widths = [e.get_input_embeddings().weight.shape[1] for e in comps.text_encoders]
            if [v.shape[1] for v in vectors] != widths or not all(torch.isfinite(v).all() for v in vectors):
                raise ExportError(f"{EMBEDDINGS_FILE} does not hold finite vectors of this model's widths {widths}")
        if method in ("lora", "pivotal"):
            from studio.models.lora_formats import studio_adapter_spec

            for file in folder.glob("*.safetensors"):  # the diffusers (or studio) file and the kohya one
                state = load_file(str(file))
                if not state or not all(torch.isfinite(t).all() for t in state.values()):
                    raise ExportError(f"{file.name} is empty or holds non-finite weights")
            if studio_adapter_spec(folder / LORA_FILE) is None:  # LoKr / LoHa: a file diffusers cannot read
                comps.family.pipeline_class().lora_state_dict(str(folder / LORA_FILE))
        if (folder / DETAIL_VAE_DIR).is_dir():
            from diffusers import AutoencoderKL

            vae = AutoencoderKL.from_pretrained(str(folder / DETAIL_VAE_DIR))
            if not all(torch.isfinite(p).all() for p in vae.decoder.parameters()):
                raise ExportError(f"{DETAIL_VAE_DIR}/ holds non-finite decoder weights")
        if method == "full":
            denoiser = comps.family.denoiser_name
            saved = load_file(str(next((folder / FULL_MODEL_DIR / denoiser).glob("*.safetensors"))))
            live = comps.denoiser.state_dict()
            name = next(iter(saved))
            if not torch.equal(saved[name].cpu().float(), live[name].detach().cpu().float()):
                raise ExportError(f"the saved {denoiser} differs from the trained one at {name}")
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"the outputs in {folder} could not be read back ({exc})") from exc


_TAGS = {"lora": "lora", "full": "full-finetune", "textual_inversion": "textual-inversion",
         "pivotal": "lora, textual-inversion, pivotal-tuning"}


def _flow_usage(config, source: ModelSource, family) -> list[str]:
    """How to draw with an SD3 / FLUX LoRA, in diffusers and in ComfyUI (which reads diffusers' file for both)."""
    if config.method != "lora":
        return []
    return ["## How to use", "", "```python", "import torch", f"from diffusers import {family.pipeline_class_name}",
            f'pipe = {family.pipeline_class_name}.from_pretrained("{source.label}", torch_dtype=torch.bfloat16)',
            f'pipe.load_lora_weights(".", weight_name="{LORA_FILE}")',
            f'image = pipe("{config.resolved_instance_prompt} on the beach", '
            f'guidance_scale={family.usual_guidance}).images[0]', "```", "",
            f"ComfyUI: put `{LORA_FILE}` in `models/loras` and load it with a LoraLoader on the {family.title} model "
            "(ComfyUI reads diffusers' LoRA format for this family, so there is no separate kohya file).", ""]


def _usage(config) -> list[str]:
    """How to load a learned token (and pivotal tuning's LoRA with it): the lines a user copies."""
    if not config.learns_token:
        return []
    a1111 = a1111_embedding_file(config.token)
    lines = ["## How to use", "", "```python",
             "from diffusers import AutoPipelineForText2Image",
             "pipe = AutoPipelineForText2Image.from_pretrained(BASE_MODEL)"]
    if config.method == "pivotal":
        lines.append(f'pipe.load_lora_weights(".", weight_name="{LORA_FILE}")  # the LoRA, then its token')
    lines += [f'pipe.load_textual_inversion("{EMBEDDINGS_FILE}", token="{config.token}")  # SD 1.x / 2.x',
              "# SDXL: state = safetensors.torch.load_file(...); load state['clip_l'] with pipe.text_encoder and "
              "pipe.tokenizer, state['clip_g'] with pipe.text_encoder_2 and pipe.tokenizer_2",
              f'image = pipe("{config.resolved_instance_prompt} on the beach").images[0]', "```", "",
              f"A1111 / ComfyUI: put `{a1111}` in the embeddings folder and write `{a1111[:-len('.safetensors')]}` "
              "where the prompt names the subject" + (" (with the LoRA file loaded too)." if config.method == "pivotal"
                                                     else "."), ""]
    return lines


def _subjects(run: RunFolder, config) -> list[str]:
    """A several-subject run's trigger phrases, one per subject (each drawn by its own)."""
    from studio.concepts import Concept

    concepts = [Concept.from_dict(c) for c in run.read_meta().concepts] if run.has_meta() else []
    if len(concepts) < 2:
        return []
    lines = ["## Subjects", "", "| subject | trigger phrase | class prompt (prior preservation) |", "|---|---|---|"]
    for concept in concepts:
        seen = concept.settings(config)
        prior = seen.resolved_class_prompt + ("" if seen.with_prior_preservation else " (off)")
        lines.append(f"| {concept.label} | **{seen.resolved_instance_prompt}** | {prior} |")
    return lines + [""]


def _rates(config) -> str:
    """The learning rates of what trained: a token's vectors train at their own rate."""
    token = f"the token's {config.num_vectors} vector(s) at {config.token_learning_rate:g}"
    if config.method == "textual_inversion":
        return f"learning rate: {token}"
    return f"learning rate {config.learning_rate:g}" + (f", {token}" if config.learns_token else "")


def write_model_card(folder: Path, run: RunFolder, resolved: ResolvedConfig, source: ModelSource, scorecard: str = "",
                     family=None) -> Path:
    """`scorecard`: the scorecard's markdown (studio.evaluation.scorecard), placed before the settings; `family`: the
    base model's (studio.models.families), for how to load the files."""
    from studio.inference.grid import preview_grid

    config = resolved.config
    grid_path = folder / "samples.png"
    grid = preview_grid(run)
    if grid is not None:
        grid.save(grid_path)
    preset = next((s.split(":")[0].replace("preset ", "") for s in resolved.sources.values() if s.startswith("preset")), "none")
    lines = [
        "---", "library_name: diffusers", f"base_model: {source.label}", "tags: [dreambooth, dreambooth-studio, "
        + _TAGS[config.method] + "]", f"instance_prompt: {config.resolved_instance_prompt}", "---",
        "", f"# DreamBooth: {config.identifier} {config.class_noun}".rstrip(), "",
        f"Trained with DreamBooth Studio on `{source.label}` ({config.method}, preset `{preset}`).", "",
        f"- Trigger phrase: **{config.resolved_instance_prompt}**",
        f"- Class prompt (prior preservation {'on' if config.with_prior_preservation else 'off'}): {config.resolved_class_prompt}",
        f"- Steps: {config.max_steps}, batch {config.batch_size}, " + _rates(config),
        f"- Training images: {resolved.num_images}", "",
    ]
    lines += _subjects(run, config)
    if config.detail_stage:
        where = f"`{FULL_MODEL_DIR}/vae`" if config.method == "full" else f"`{DETAIL_VAE_DIR}/`"
        lines += [f"Detail stage: the VAE decoder was fine-tuned on the subject's photos ({where}): "
                  "`AutoencoderKL.from_pretrained(...)`, passed as the pipeline's `vae=`.", ""]
    lines += _usage(config) if family is None or family.kohya_format else _flow_usage(config, source, family)
    if grid is not None:
        lines += ["![samples](samples.png)", "", "Rows: training steps (the first row is the base model). Columns: prompts and seeds.", ""]
    if scorecard:
        lines += [scorecard]
    lines += ["## Settings", "", "```json", json.dumps(config.to_dict(), indent=2), "```", ""]
    path = folder / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
