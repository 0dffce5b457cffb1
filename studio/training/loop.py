"""The DreamBooth training loop, read top to bottom in numbered phases.

    1. load the base model, pick device and precision, check the identifier
    2. class images for prior preservation, drawn by the *untouched* base model
    3. choose the trainable weights (LoRA or full), optimizer, LR schedule
    4. work done once: image latents and (frozen) prompt embeddings
    5. resume from the last complete checkpoint, if asked
    6. the loop: instance + class batch, noise, UNet, loss, step; previews, checkpoints
    7. export the outputs, reload them to verify, and only then report "finished"

It knows nothing of threads or UIs: it reports through `emit(event)` and
reads `commands` once per step.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from studio.config import ResolvedConfig
from studio.events import Cancelled, Checkpoint, Emit, Failed, Finished, Notice, Phase, Started, Step
from studio.models.families import Components, load_components
from studio.models.sources import ModelSource
from studio.training import checkpoint as ckpt
from studio.training.batches import EpochSampler, LatentSource, PromptSource, image_tensor
from studio.training.commands import RunCommands
from studio.training.export import export_outputs, write_inference_files
from studio.training.hardware import make_optimizer, pick_device, pick_precision
from studio.training.identifier import check_identifier
from studio.training.losses import dreambooth_loss, min_snr_weights, sample_noise, target_for
from studio.training.previews import draw_previews
from studio.training.prior import ensure_class_images
from studio.training.trainable import param_groups, prepare_trainable


class TrainingError(RuntimeError):
    """The run cannot go on; `advice` says what the user can do."""

    def __init__(self, message: str, advice: str = "") -> None:
        super().__init__(message)
        self.advice = advice


@dataclass(frozen=True)
class TrainingImage:
    image: Any  # PIL.Image, square, already cropped
    caption: str | None = None


@dataclass(frozen=True)
class TrainRequest:
    run_id: str
    run_dir: Path
    resolved: ResolvedConfig
    source: ModelSource
    images: Sequence[TrainingImage]
    class_cache_root: Path
    resume: bool = False
    device: str | None = None
    components: Components | None = field(default=None, compare=False)  # reuse an already-loaded base


@dataclass(frozen=True)
class RunOutcome:
    status: str  # finished | cancelled | failed
    step: int
    outputs: tuple[str, ...] = ()


def train(request: TrainRequest, emit: Emit, commands: RunCommands | None = None) -> RunOutcome:
    """Run the phases; every way a run can end is reported as exactly one terminal event."""
    commands = commands or RunCommands()
    last_step = [0]

    def tracking(event) -> None:
        if event.kind in ("step", "started"):
            last_step[0] = getattr(event, "step", 0) or getattr(event, "resumed_from", 0)
        emit(event)

    def fail(error: str, advice: str) -> RunOutcome:
        _release_memory()
        emit(Failed(step=last_step[0], error=error, advice=advice))
        return RunOutcome("failed", last_step[0])

    try:
        return _train(request, tracking, commands)
    except InterruptedError:
        emit(Cancelled(step=last_step[0]))
        return RunOutcome("cancelled", last_step[0])
    except TrainingError as exc:
        return fail(str(exc), exc.advice)
    except torch.OutOfMemoryError as exc:
        return fail(f"out of memory at step {last_step[0]}: {str(exc)[:300]}",
                    "use LoRA, enable gradient checkpointing, lower the batch size or the resolution, or turn previews down")
    except OSError as exc:  # a full disk or a vanished folder during a save
        return fail(f"could not write to disk at step {last_step[0]}: {exc}",
                    "free disk space, then resume: the last complete checkpoint is intact")


def _release_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _train(request: TrainRequest, emit: Emit, commands: RunCommands) -> RunOutcome:
    config = request.resolved.config
    run_dir = request.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(request.resolved.to_json(), encoding="utf-8")
    started_at = time.perf_counter()

    # 1. Base model, hardware, identifier.
    emit(Phase(name="loading", detail=request.source.label))
    comps = request.components or load_components(request.source)
    device = pick_device(request.device)
    precision, notice = pick_precision(config.mixed_precision, device)
    if notice:
        emit(Notice(message=notice))
    resolution = config.resolution or comps.native_resolution
    report = check_identifier(comps.tokenizers[0], config.identifier, config.class_noun, config.resolved_instance_prompt)
    if not report.ok:
        raise TrainingError("; ".join(report.errors), "fix the instance prompt, identifier or class noun")
    for warning in report.warnings:
        emit(Notice(message=warning + (f" (try: {', '.join(report.suggestions)})" if report.suggestions else "")))
    if len(request.images) == 0:
        raise TrainingError("no training images", "add 3-20 photos of your subject")
    for module in [comps.vae, *comps.text_encoders]:
        module.to(device)
        if precision.frozen_dtype != torch.float32:
            module.to(dtype=precision.frozen_dtype)
    comps.unet.to(device)

    # 2. Class images from the untouched base model.
    class_paths: list[Path] = []
    if config.with_prior_preservation:
        emit(Phase(name="class_images", detail=config.resolved_class_prompt))
        class_paths = ensure_class_images(
            comps, cache_root=request.class_cache_root, class_prompt=config.resolved_class_prompt,
            count=config.num_class_images, resolution=resolution, steps=config.class_image_steps,
            guidance=config.class_image_guidance, batch_size=config.class_image_batch, device=device, emit=emit,
            should_stop=commands.should_stop,
        )

    # 3. Trainable weights, optimizer, schedule.
    trainable = prepare_trainable(comps, config)
    if config.gradient_checkpointing:
        comps.unet.enable_gradient_checkpointing()
        for name, module in trainable.modules.items():
            if name.startswith("text_encoder"):
                module.gradient_checkpointing_enable()
    optimizer, notice = make_optimizer(param_groups(trainable, config), use_8bit=config.use_8bit_adam, device=device,
                                       weight_decay=config.weight_decay)
    if notice:
        emit(Notice(message=notice))
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler

    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps,
                                 num_training_steps=config.max_steps)
    noise_scheduler = DDPMScheduler.from_config(comps.scheduler_config)
    generator = torch.Generator("cpu").manual_seed(config.seed)
    torch.manual_seed(config.seed)

    # 4. Latents and prompt embeddings, once.
    emit(Phase(name="caching", detail=f"{len(request.images)} images, {len(class_paths)} class images"))
    from PIL import Image

    instance = LatentSource(comps, image_tensor([i.image for i in request.images], resolution), cache=config.cache_latents,
                            flip=config.random_flip, device=device, dtype=precision.frozen_dtype)
    instance_prompts = [config.prompt(i.caption) if i.caption else config.resolved_instance_prompt for i in request.images]
    classes = None
    if class_paths:
        class_images = [Image.open(p).convert("RGB") for p in class_paths]
        classes = LatentSource(comps, image_tensor(class_images, resolution), cache=config.cache_latents,
                               flip=config.random_flip, device=device, dtype=precision.frozen_dtype)
    prompts = PromptSource(comps, instance_prompts + [config.resolved_class_prompt], resolution,
                           frozen=not config.train_text_encoder)
    samplers = {"instance": EpochSampler(instance.count, generator)}
    if classes is not None:
        samplers["class"] = EpochSampler(classes.count, generator)

    # 5. Resume.
    loop = ckpt.LoopState(step=0, samplers={})
    last = ckpt.latest_checkpoint(run_dir) if request.resume else None
    if last is not None:
        weights, loop = ckpt.load_checkpoint(last, optimizer=optimizer, lr_scheduler=lr_scheduler, generator=generator)
        trainable.load_state_dict(weights)
        for name, sampler in samplers.items():
            sampler.load_state_dict(loop.samplers[name])
        emit(Notice(message=f"resumed from {last.name}"))
    emit(Started(run_id=request.run_id, max_steps=config.max_steps, method=config.method, device=str(device),
                 precision=precision.name, resumed_from=loop.step))

    # 6. The loop.
    def preview(at: int) -> None:
        emit(draw_previews(comps, config, run_dir=run_dir, step=at, resolution=resolution, device=device,
                           autocast=precision.autocast))

    def save(at: int) -> Path:
        loop.samplers = {n: s.state_dict() for n, s in samplers.items()}
        folder = ckpt.save_checkpoint(
            run_dir, trainable_state=trainable.state_dict(), optimizer=optimizer, lr_scheduler=lr_scheduler,
            generator=generator, loop=loop, keep=config.keep_checkpoints,
            extra_writer=lambda f: write_inference_files(f, comps, trainable, config),
        )
        emit(Checkpoint(step=at, path=str(folder.relative_to(run_dir))))
        return folder

    emit(Phase(name="training", detail=f"{config.max_steps} steps"))
    if loop.step == 0 and config.preview_every:
        preview(0)  # the untouched model: the "before" of every drift comparison
    trainable.train()
    scaler = precision.grad_scaler()
    batch = config.batch_size
    while loop.step < config.max_steps:
        if commands.should_pause():
            commands.wait_while_paused()
        if commands.should_stop():
            folder = save(loop.step)
            emit(Cancelled(step=loop.step, checkpoint=str(folder.relative_to(run_dir))))
            return RunOutcome("cancelled", loop.step)
        tic = time.perf_counter()
        values = torch.zeros(3)
        for _ in range(config.gradient_accumulation):
            index = samplers["instance"].take(batch)
            latents = [instance.sample(index, generator)]
            batch_prompts = [instance_prompts[i] for i in index.tolist()]
            if classes is not None:
                latents.append(classes.sample(samplers["class"].take(batch), generator))
                batch_prompts += [config.resolved_class_prompt] * batch
            latents = torch.cat(latents).to(device)
            noise = sample_noise(latents.cpu(), config.offset_noise, generator).to(device)
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],), generator=generator).to(device)
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            with precision.autocast():
                pred = comps.unet(noisy, timesteps, **prompts.batch(batch_prompts)).sample
            target = target_for(noise_scheduler, latents, noise, timesteps)
            weights = None
            if config.snr_gamma > 0:
                weights = min_snr_weights(noise_scheduler.alphas_cumprod, timesteps, config.snr_gamma,
                                          noise_scheduler.config.prediction_type)
            parts = dreambooth_loss(pred, target, num_instance=batch, prior_weight=config.prior_loss_weight,
                                    sample_weights=weights)
            scaler.scale(parts.total / config.gradient_accumulation).backward()
            values += torch.stack([parts.total, parts.instance, parts.prior]).detach().float().cpu() / config.gradient_accumulation
        loss, instance_loss, prior_loss = values.tolist()  # one host sync per step: the numbers are displayed
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                                   config.max_grad_norm or float("inf"))
        if not (torch.isfinite(values).all() and torch.isfinite(grad_norm)):
            optimizer.zero_grad(set_to_none=True)
            scaler.update()
            loop.bad_steps += 1
            if loop.bad_steps >= config.max_bad_steps:
                folder = save(loop.step)
                raise TrainingError(
                    f"the loss was not finite for {loop.bad_steps} steps in a row; stopped at step {loop.step} and kept "
                    f"the last good weights in {folder.name}",
                    "lower the learning rate, or turn mixed precision off",
                )
            continue
        loop.bad_steps = 0
        scaler.step(optimizer)
        scaler.update()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loop.step += 1
        emit(Step(step=loop.step, max_steps=config.max_steps, loss=loss, instance_loss=instance_loss,
                  prior_loss=prior_loss, lr=lr_scheduler.get_last_lr()[0], seconds=time.perf_counter() - tic))
        if commands.take_sample_request() or (config.preview_every and loop.step % config.preview_every == 0):
            preview(loop.step)
        if config.checkpoint_every and loop.step % config.checkpoint_every == 0 and loop.step < config.max_steps:
            save(loop.step)

    # 7. Outputs, verified before "finished".
    emit(Phase(name="saving", detail="writing and verifying outputs"))
    trainable.train(False)
    outputs = export_outputs(run_dir, comps, trainable, request.resolved, source=request.source)
    emit(Finished(step=loop.step, outputs=tuple(outputs), seconds=time.perf_counter() - started_at))
    return RunOutcome("finished", loop.step, tuple(outputs))
