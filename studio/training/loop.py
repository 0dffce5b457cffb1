"""The DreamBooth training loop, read top to bottom in numbered phases.

    1. load the base model, pick device and precision, check the identifier
    2. class images for prior preservation, drawn by the *untouched* base model
    3. choose the trainable weights (LoRA or full), optimizer, LR schedule
    4. work done once: image latents and (frozen) prompt embeddings
    5. resume from the last complete checkpoint, if asked
    6. the loop: instance + class batch, noise, UNet, loss, step; previews, checkpoints (each scored)
    7. score the final weights, pick the checkpoint to keep
    8. the detail stage, if asked: the VAE decoder fine-tuned on the subject's photos
    9. export the kept weights (the last step's files beside them), reload the outputs to verify, and only then
       report "finished"

It knows nothing of threads or UIs: it reports through `emit(event)` and
reads `commands` once per step.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from studio.config import ResolvedConfig
from studio.data.dataset import PreparedImage
from studio.events import Cancelled, Checkpoint, Emit, Failed, Finished, Notice, Phase, Started, Step
from studio.models.families import Components, load_components
from studio.models.sources import ModelSource
from studio.runs import RunFolder, RunStatus
from studio.workspace import BASE_PREVIEWS_CACHE, CLASS_IMAGES_CACHE
from studio.training import checkpoint as ckpt
from studio.training.batches import EpochSampler, LatentSource, PromptSource, image_tensor
from studio.training.commands import RunCommands
from studio.training.distributed import LR_SCALING, SINGLE, PeerLostError, World
from studio.training.export import export_checkpoint, export_outputs, write_inference_files
from studio.training.hardware import DeviceTooSmall, check_fits, make_optimizer, pick_device, pick_precision
from studio.training.identifier import check_identifier
from studio.training.losses import dreambooth_loss, sample_noise
from studio.training.previews import PreviewBudget, draw_base_previews, draw_previews
from studio.training.prior import ensure_class_images
from studio.training.subjects import Subject, layout, preview_prompts
from studio.training.trainable import Trainable, param_groups, prepare_trainable


class TrainingError(RuntimeError):
    """The run cannot go on; `advice` says what the user can do."""

    def __init__(self, message: str, advice: str = "") -> None:
        super().__init__(message)
        self.advice = advice


@dataclass(frozen=True)
class TrainRequest:
    run: RunFolder
    resolved: ResolvedConfig
    source: ModelSource
    images: Sequence[PreparedImage]  # square, cropped, at the training resolution
    cache_root: Path  # shared across runs: class images and the untouched model's previews
    resume: bool = False
    device: str | None = None
    components: Components | None = field(default=None, compare=False)  # reuse an already-loaded base
    world: World = SINGLE  # this process's share of a multi-process run (studio.training.distributed)
    # several subjects in one run (studio.training.subjects), the first being `resolved` and `images`; () = just that
    subjects: tuple[Subject, ...] = ()

    @property
    def all_subjects(self) -> tuple[Subject, ...]:
        return self.subjects or (Subject(self.resolved.config, self.images),)


@dataclass(frozen=True)
class RunOutcome:
    status: RunStatus  # finished | cancelled | failed
    step: int
    outputs: tuple[str, ...] = ()


def train(request: TrainRequest, emit: Emit, commands: RunCommands | None = None) -> RunOutcome:
    """Run the phases; every way a run can end is reported as exactly one terminal event."""
    commands = commands or RunCommands()
    last_step = [0]
    main = request.world.is_main

    def tracking(event) -> None:
        if event.kind in ("step", "started"):
            last_step[0] = getattr(event, "step", 0) or getattr(event, "resumed_from", 0)
        if main:  # one voice for the run: the other processes train silently
            emit(event)

    def fail(error: str, advice: str) -> RunOutcome:
        _release_memory()
        tracking(Failed(step=last_step[0], error=error, advice=advice))
        return RunOutcome(RunStatus.FAILED, last_step[0])

    try:
        return _train(request, tracking, commands)
    except InterruptedError:
        tracking(Cancelled(step=last_step[0]))
        return RunOutcome(RunStatus.CANCELLED, last_step[0])
    except PeerLostError as exc:  # another process of the run died: stop now rather than wait for it forever
        return fail(f"another process of this run stopped at step {last_step[0]} ({exc})",
                    "resume with --resume (on any number of processes): the last complete checkpoint is intact")
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


def loading_phase(source: ModelSource) -> Phase:
    """The event that says the base model is being loaded (emitted by whoever loads it)."""
    return Phase(name="loading", detail=source.label)


@dataclass
class _SubjectData:
    """One subject's cached training data: its photos' latents and prompts, and the names of the samplers that deal
    its photos and its class images."""

    subject: Subject
    latents: LatentSource
    prompts: list[str]
    sampler: str
    class_sampler: str

    @property
    def class_prompt(self) -> str | None:
        return self.subject.class_prompt


@dataclass
class _Run:
    """What the phases hand each other. Each phase fills its part: None means "that phase has not run yet"."""

    request: TrainRequest
    emit: Emit
    commands: RunCommands
    comps: Components | None = None  # 1
    device: torch.device | None = None
    precision: Any = None
    resolution: int = 0
    trainable: Trainable | None = None  # 3
    optimizer: Any = None
    lr_scheduler: Any = None
    objective: Any = None  # studio.training.objectives: how a batch is noised, what is predicted
    generator: torch.Generator | None = None
    subjects: list[_SubjectData] = field(default_factory=list)  # 4
    classes: dict[str, LatentSource] = field(default_factory=dict)  # class prompt -> its images' latents
    prompts: PromptSource | None = None
    samplers: dict[str, EpochSampler] = field(default_factory=dict)
    class_paths: dict[str, list[Path]] = field(default_factory=dict)  # 2: each class prompt's images
    loop: ckpt.LoopState | None = None  # 5
    scoring: Any = None  # studio.evaluation.session.TrainingScorer, made with the loop state

    @property
    def config(self):
        return self.request.resolved.config

    @property
    def folder(self) -> RunFolder:
        return self.request.run

    @property
    def world(self) -> World:
        return self.request.world

    @property
    def preview_config(self):
        """With several subjects the previews show each subject and its class (a preset's preview prompts name one
        subject, so they give way)."""
        subjects = self.request.all_subjects
        if len(subjects) == 1:
            return self.config
        return dataclasses.replace(self.config, preview_prompts=preview_prompts(subjects))


def _train(request: TrainRequest, emit: Emit, commands: RunCommands) -> RunOutcome:
    run = _Run(request, emit, commands)
    world = request.world
    world.check_batch(request.resolved.config.batch_size)
    if world.is_main:
        request.run.path.mkdir(parents=True, exist_ok=True)
        facts = {"distributed": world.describe(request.resolved.config)} if world.distributed else {}
        if request.subjects:
            facts["subjects"] = [{"identifier": s.identifier, "class_noun": s.config.class_noun, "photos": len(s.images),
                                  "instance_prompt": s.config.resolved_instance_prompt, "class_prompt": s.class_prompt}
                                 for s in request.subjects]
        request.run.write_config(request.resolved.to_json(**facts))
    started_at = time.perf_counter()
    _load(run)  # 1
    run.class_paths = _class_images(run)  # 2
    _setup_optimisation(run)  # 3
    _cache(run)  # 4
    _resume(run)  # 5
    outcome = _loop(run)  # 6
    if outcome is not None:
        return outcome
    run.trainable.train(False)
    if not world.is_main:  # the main process scores and exports the weights every process holds
        return RunOutcome(RunStatus.FINISHED, run.loop.step)
    card = run.scoring.finish(run.loop.step)  # 7
    if run.config.detail_stage:  # 8: after the scorecard, whose checkpoints were all drawn with the same decoder
        _detail_stage(run)
    emit(Phase(name="saving", detail="writing and verifying outputs"))  # 9
    markdown = card.markdown() if card is not None else ""
    outputs = export_outputs(request.run, run.comps, run.trainable, request.resolved, source=request.source,
                             scorecard=markdown)
    if card is not None and card.pick is not None and card.pick.step < run.loop.step:
        outputs = _export_pick(run, card.pick.step, markdown) or outputs
    emit(Finished(step=run.loop.step, outputs=tuple(outputs), seconds=time.perf_counter() - started_at))
    return RunOutcome(RunStatus.FINISHED, run.loop.step, tuple(outputs))


def _detail_stage(run: _Run) -> None:
    """8. Fine-tune the VAE decoder on every subject's photos; class images keep the others decoding as before
    (studio.training.detail). The run's own VAE is tuned in place, so the exports carry it."""
    from PIL import Image

    from studio.training.detail import tune_decoder

    config = run.config
    photos = [i.image for subject in run.request.all_subjects for i in subject.images]
    classes = [Image.open(p).convert("RGB") for paths in run.class_paths.values() for p in paths]
    run.emit(Phase(name="detail", detail=f"VAE decoder on {len(photos)} photos, {config.detail_steps} steps"
                                         + ("" if classes else " (no class images to keep others as they were: "
                                                               "prior preservation is off)")))
    report = tune_decoder(run.comps.vae, photos, classes, steps=config.detail_steps,
                          learning_rate=config.detail_learning_rate, keep_weight=config.detail_keep_weight,
                          device=run.device, seed=config.seed, should_stop=run.commands.should_stop)
    kept = (f"; class images {report.class_mae_before:.1f} -> {report.class_mae_after:.1f}"
            if classes else "")
    run.emit(Notice(message=f"detail stage: the subject's photos reconstruct with a mean error of "
                            f"{report.subject_mae_before:.1f} -> {report.subject_mae_after:.1f} (of 255){kept}, "
                            f"{report.steps} steps in {report.seconds:.0f} s"))


def _export_pick(run: _Run, step: int, scorecard: str) -> list[str] | None:
    """The picked checkpoint as the output, the last step's files beside it; if that fails, the last step's output
    (already written and verified) stays, and the user is told: the pick never fails a run."""
    request = run.request
    try:
        return export_checkpoint(request.run, run.comps, run.trainable, request.resolved, source=request.source,
                                 checkpoint=request.run.checkpoint_dir(step), scorecard=scorecard)
    except Exception as exc:
        run.emit(Notice(message=f"scorecard: could not make step {step} the output ({type(exc).__name__}: "
                                f"{str(exc)[:200]}); the output is the last step"))
        return None


def _load(run: _Run) -> None:
    """1. Base model, device, precision; the identifier and the photos are checked before any work."""
    config, request = run.config, run.request
    run.device = pick_device(run.world.device(request.device))
    if config.quantize != "none" and run.device.type != "cuda":
        raise TrainingError(f"quantize = {config.quantize!r} loads the model in {config.quantize} through bitsandbytes, "
                            f"which needs a CUDA GPU; this run is on {run.device.type}",
                            "set quantize = 'none' (or use a preset without it), or train on a CUDA GPU")
    try:  # before minutes of loading a model that cannot train here
        check_fits(request.source, config, run.device)
    except DeviceTooSmall as exc:
        raise TrainingError(str(exc), "pick a 24 GB preset or a smaller model") from exc
    reuse = request.components if config.quantize == "none" else None  # a quantized base is loaded as such
    if reuse is None:
        run.emit(loading_phase(request.source))
    run.comps = comps = reuse or load_components(request.source, quantize=config.quantize)
    for subject in request.all_subjects:
        try:
            comps.family.check_settings(subject.config)
        except ValueError as exc:
            raise TrainingError(str(exc), f"these settings do not apply to {comps.family.title} models") from exc
    run.precision, notice = pick_precision(config.mixed_precision, run.device)
    if notice:
        run.emit(Notice(message=notice))
    run.resolution = config.resolution or comps.native_resolution
    subjects = request.all_subjects
    for subject in subjects:
        seen = subject.config
        report = check_identifier(comps.tokenizers[0], seen.token, seen.class_noun, seen.resolved_instance_prompt)
        named = f"{seen.identifier}: " if len(subjects) > 1 else ""
        if not report.ok:
            raise TrainingError(named + "; ".join(report.errors), "fix the instance prompt, identifier or class noun")
        # a learned token is new to the vocabulary: the advice about rare and split words is for existing words
        for warning in () if config.learns_token else report.warnings:
            run.emit(Notice(message=named + warning
                            + (f" (try: {', '.join(report.suggestions)})" if report.suggestions else "")))
        if len(subject.images) == 0:
            raise TrainingError(f"{named}no training images", "add 3-20 photos of your subject")
    for module in [comps.vae, *comps.text_encoders]:
        module.to(run.device)
        if run.precision.frozen_dtype != torch.float32:
            module.to(dtype=run.precision.frozen_dtype)
    if config.quantize == "none":  # a quantized denoiser was placed on the GPU as it loaded
        comps.denoiser.to(run.device)


def _class_images(run: _Run) -> dict[str, list[Path]]:
    """2. Class images for prior preservation, drawn by the untouched base model (cached across runs): one set per
    class prompt of the subjects that keep their class prior."""
    config = run.config
    found: dict[str, list[Path]] = {}
    if config.method == "textual_inversion" and config.with_prior_preservation:
        run.emit(Notice(message="textual inversion trains only the new token, which the class prompt never says: "
                                "no class images are drawn (prior preservation applies to LoRA, full and pivotal)"))
    for subject in run.request.all_subjects:
        prompt = subject.class_prompt
        if prompt is None or prompt in found:
            continue
        run.emit(Phase(name="class_images", detail=prompt))
        found[prompt] = ensure_class_images(
            run.comps, cache_root=run.request.cache_root / CLASS_IMAGES_CACHE, class_prompt=prompt,
            count=config.num_class_images, resolution=run.resolution, steps=config.class_image_steps,
            guidance=config.class_image_guidance, batch_size=config.class_image_batch, device=run.device,
            emit=run.emit, should_stop=run.commands.should_stop, world=run.world,
        )
    return found


def _setup_optimisation(run: _Run) -> None:
    """3. Trainable weights (LoRA or full), optimizer, LR schedule, the training objective, the run's RNG."""
    from diffusers.optimization import get_scheduler

    config = run.config
    run.trainable = prepare_trainable(run.comps, config)
    if run.trainable.adapter == "lora" and config.adapter == "locon":
        run.emit(Notice(message=f"adapter = 'locon' adapts convolutions, and this {run.comps.family.title} transformer "
                                "has none: it trains LoRA on the attention and feed-forward layers"))
    if config.gradient_checkpointing:
        run.comps.denoiser.enable_gradient_checkpointing()
        for name, module in run.trainable.modules.items():
            if name.startswith("text_encoder"):
                module.gradient_checkpointing_enable()
    run.optimizer, notice = make_optimizer(param_groups(run.trainable, config), use_8bit=config.use_8bit_adam,
                                           device=run.device, weight_decay=config.weight_decay)
    run.world.broadcast_(_parameters(run.optimizer))
    if notice:
        run.emit(Notice(message=notice))
    run.lr_scheduler = get_scheduler(config.lr_scheduler, run.optimizer, num_warmup_steps=config.lr_warmup_steps,
                                     num_training_steps=config.max_steps)
    run.objective = run.comps.family.objective(run.comps, config)
    run.generator = torch.Generator("cpu").manual_seed(config.seed)
    torch.manual_seed(config.seed)


def _cache(run: _Run) -> None:
    """4. Latents of every image and (frozen) prompt embeddings, computed once.

    The first subject's samplers are "instance" and "class" (as a one-subject run's, so its checkpoints read the
    same); the others' are numbered."""
    from PIL import Image

    config, subjects, class_paths = run.config, run.request.all_subjects, run.class_paths
    photos = sum(len(s.images) for s in subjects)
    run.emit(Phase(name="caching", detail=f"{photos} images, {sum(map(len, class_paths.values()))} class images"))
    common = dict(cache=config.cache_latents, flip=config.random_flip, device=run.device, dtype=run.precision.frozen_dtype)
    class_samplers: dict[str, str] = {}
    for index, (prompt, paths) in enumerate(class_paths.items()):
        pictures = [Image.open(p).convert("RGB") for p in paths]
        run.classes[prompt] = LatentSource(run.comps, image_tensor(pictures, run.resolution), **common)
        class_samplers[prompt] = "class" if index == 0 else f"class:{index}"
    all_prompts: list[str] = []
    for index, subject in enumerate(subjects):
        seen = subject.config
        latents = LatentSource(run.comps, image_tensor([i.image for i in subject.images], run.resolution), **common)
        prompts = [_spelled_out(seen, seen.prompt(i.caption) if i.caption else seen.resolved_instance_prompt)
                   for i in subject.images]
        data = _SubjectData(subject, latents, prompts, "instance" if index == 0 else f"instance:{index}",
                            class_samplers.get(subject.class_prompt, ""))
        run.subjects.append(data)
        run.samplers[data.sampler] = EpochSampler(latents.count, run.generator)
        all_prompts += prompts + ([data.class_prompt] if data.class_prompt else [])
    for prompt, name in class_samplers.items():
        run.samplers[name] = EpochSampler(run.classes[prompt].count, run.generator)
    run.prompts = PromptSource(run.comps, all_prompts or [config.resolved_class_prompt], run.resolution,
                               frozen=not config.trains_text_encoder)
    if config.offload_text_encoders and run.device.type != "cpu":  # every prompt is encoded: free the GPU for training
        for encoder in run.comps.text_encoders:
            encoder.to("cpu")


def _spelled_out(config, prompt: str) -> str:
    """A learned token with several vectors stands for all of them ("<sks>" -> "<sks> <sks>_1"), as diffusers'
    pipelines expand it when drawing."""
    if not config.learns_token or config.num_vectors == 1:
        return prompt
    from studio.models.embeddings import token_names

    return prompt.replace(config.token, " ".join(token_names(config.token, config.num_vectors)))


def _resume(run: _Run) -> None:
    """5. Continue from the last complete checkpoint: weights, optimizer, schedule, RNGs, sampler order."""
    run.loop = ckpt.LoopState(step=0, samplers={})
    last = run.folder.latest_checkpoint() if run.request.resume else None
    if last is not None:
        weights, run.loop = ckpt.load_checkpoint(last, optimizer=run.optimizer, lr_scheduler=run.lr_scheduler,
                                                 generator=run.generator)
        run.trainable.load_state_dict(weights)
        for name, sampler in run.samplers.items():
            sampler.load_state_dict(run.loop.samplers[name])
        run.emit(Notice(message=f"resumed from {last.name}"))
    run.emit(Started(run_id=run.folder.run_id, max_steps=run.config.max_steps, method=run.config.method,
                     device=str(run.device), precision=run.precision.name, resumed_from=run.loop.step))
    if run.world.distributed:
        split = run.world.describe(run.config)
        run.emit(Notice(message=f"{split['processes']} processes: global batch {split['global_batch']} "
                                f"({split['per_process_batch']} per process, gradients averaged); learning rate "
                                f"{run.config.learning_rate:g}, not scaled ({LR_SCALING.split(':')[1].strip()})"))
    run.scoring = _scoring(run) if run.world.is_main else None


def _scoring(run: _Run):
    """The run's scorecard: the base model's and every checkpoint's scores (studio.evaluation)."""
    from studio.evaluation.session import TrainingScorer

    request = run.request
    others = [(s.config, [i.image for i in s.images]) for s in request.all_subjects[1:]]
    first = request.all_subjects[0].config  # the run's config as its first subject sees it
    return TrainingScorer(run.comps, first, request.source.kind, run.folder, [i.image for i in request.images],
                          request.cache_root, run.resolution, run.device, run.emit, run.precision.autocast,
                          others=others)


def _preview(run: _Run, step: int) -> None:
    event = draw_previews(run.comps, run.preview_config, run=run.folder, step=step, resolution=run.resolution,
                          device=run.device, autocast=run.precision.autocast)
    run.emit(event)
    run.scoring.saw_preview(event)  # the scorecard reuses these pictures when it scores this step


def _maybe_preview(run: _Run, budget: PreviewBudget) -> None:
    """A preview when the user asks, at the last step, and at the cadence's steps that fit the preview budget."""
    config, step = run.config, run.loop.step
    if not run.world.is_main:
        return
    asked = run.commands.take_sample_request()
    due = bool(config.preview_every) and (step % config.preview_every == 0 or step == config.max_steps)
    if not (asked or (due and (step == config.max_steps or budget.allows()))):
        if due and budget.skipped == 1:  # said once a run
            run.emit(Notice(message=f"previews spaced out to stay within {config.preview_budget:.0%} of the run's time "
                                    f"(one costs about {budget.preview_cost():.1f} s); the last step's is always drawn, "
                                    "and Sample now draws one at any time. preview_budget = 1.0 draws every one"))
        return
    tic = time.perf_counter()
    _preview(run, step)
    budget.saw_preview(time.perf_counter() - tic)


def _save(run: _Run) -> Path | None:
    """A checkpoint, written by the main process (every process holds the same weights and optimizer state)."""
    if not run.world.is_main:
        return None
    run.loop.samplers = {n: s.state_dict() for n, s in run.samplers.items()}
    folder = ckpt.save_checkpoint(
        run.folder, trainable_state=run.trainable.state_dict(), optimizer=run.optimizer,
        lr_scheduler=run.lr_scheduler, generator=run.generator, loop=run.loop, keep=run.config.keep_checkpoints,
        extra_writer=lambda f: write_inference_files(f, run.comps, run.trainable, run.config),
        protect=run.scoring.best_checkpoints() if run.scoring is not None else (),
    )
    run.emit(Checkpoint(step=run.loop.step, path=run.folder.relative(folder)))
    return folder


def _loop(run: _Run) -> RunOutcome | None:
    """6. Train until max_steps; None when done, an outcome when stopped."""
    config, loop = run.config, run.loop
    run.emit(Phase(name="training", detail=f"{config.max_steps} steps"))
    if loop.step == 0 and config.preview_every and run.world.is_main:  # the untouched model: the "before" of drift
        run.emit(draw_base_previews(run.comps, run.preview_config, run=run.folder, resolution=run.resolution,
                                    cache_root=run.request.cache_root / BASE_PREVIEWS_CACHE,
                                    device=run.device, autocast=run.precision.autocast))
    if loop.step == 0 and run.scoring is not None:
        run.scoring.score_base()
    run.trainable.train()
    scaler = run.precision.grad_scaler()
    budget = PreviewBudget(run.preview_config, config.batch_size * (2 if run.classes else 1))
    while loop.step < config.max_steps:
        if run.commands.should_pause():
            run.commands.wait_while_paused()
        if run.world.any(run.commands.should_stop()):
            folder = _save(run)
            run.emit(Cancelled(step=loop.step, checkpoint=run.folder.relative(folder) if folder else ""))
            return RunOutcome(RunStatus.CANCELLED, loop.step)
        tic = time.perf_counter()
        accumulation = config.gradient_accumulation
        values = sum((_micro_step(run, scaler, loop.step * accumulation + i) for i in range(accumulation)),
                     torch.zeros(3 + 2 * len(run.subjects)))
        run.world.average_([values, *(p.grad for p in _parameters(run.optimizer) if p.grad is not None)])
        if not _apply_update(run, scaler, values[:3]):
            continue
        numbers = values.tolist()  # one host sync per step: the numbers are displayed
        loss, instance_loss, prior_loss = numbers[:3]
        seconds = time.perf_counter() - tic
        run.emit(Step(step=loop.step, max_steps=config.max_steps, loss=loss, instance_loss=instance_loss,
                      prior_loss=prior_loss, lr=run.lr_scheduler.get_last_lr()[0], seconds=seconds,
                      subject_losses=_subject_losses(run, numbers[3:])))
        budget.saw_step(seconds)
        _maybe_preview(run, budget)
        if config.checkpoint_every and loop.step % config.checkpoint_every == 0 and loop.step < config.max_steps:
            if _save(run) is not None:
                run.scoring.score_weights(loop.step)
    return None


def _micro_step(run: _Run, scaler, micro_batch: int) -> torch.Tensor:
    """One forward/backward on [instance rows, class rows]; returns (total, instance, prior) loss, then each
    subject's (instance loss sum, rows), detached.

    The global batch is drawn whole (the same on every process: same RNG draws whatever the process count), then
    each process keeps its rows of it."""
    config, batch = run.config, run.config.batch_size
    plan = layout(micro_batch, batch, [d.subject for d in run.subjects])
    rows: list[torch.Tensor | None] = [None] * batch
    prompts: list[str] = [""] * batch
    owned_by = [[row for row, owner in enumerate(plan.owners) if owner == index] for index in range(len(run.subjects))]
    for data, owned in zip(run.subjects, owned_by):  # each subject's photos, from its own sampler
        if owned:
            picks = run.samplers[data.sampler].take(len(owned))
            for row, latent, pick in zip(owned, data.latents.sample(picks, run.generator), picks.tolist()):
                rows[row], prompts[row] = latent, data.prompts[pick]
    for data, owned in zip(run.subjects, owned_by):  # then its class images, one per row it owns (`plan.pairs` order)
        if owned and data.class_prompt is not None:
            picks = run.samplers[data.class_sampler].take(len(owned))
            rows += list(run.classes[data.class_prompt].sample(picks, run.generator))
            prompts += [data.class_prompt] * len(owned)
    latents = torch.stack(rows).to(run.device)
    noise = sample_noise(latents.cpu(), config.offset_noise, run.generator).to(run.device)
    times = run.objective.draw_times(latents.shape[0], run.generator)
    mine = list(range(batch))
    if run.world.distributed:
        mine = run.world.rows(batch, parts=1)
        keep = plan.mine(mine)
        latents, noise, times = latents[keep], noise[keep], times[keep]
        prompts = [prompts[i] for i in keep]
    noised = run.objective.noised(latents, noise, times)
    with run.precision.autocast():
        output = run.comps.family.predict(run.comps, noised.noisy, noised.timesteps, run.prompts.batch(prompts), config)
    parts = dreambooth_loss(run.objective.prediction(output, noised), noised.target, num_instance=len(mine),
                            prior_weight=config.prior_loss_weight, sample_weights=noised.weights)
    scaler.scale(parts.total / config.gradient_accumulation).backward()
    per_subject = torch.zeros(2 * len(run.subjects))
    for loss, row in zip(parts.per_instance.detach().float().cpu(), mine):
        per_subject[2 * plan.owners[row]] += loss
        per_subject[2 * plan.owners[row] + 1] += 1
    totals = torch.stack([parts.total, parts.instance, parts.prior]).detach().float().cpu()
    return torch.cat([totals, per_subject]) / config.gradient_accumulation


def _subject_losses(run: _Run, sums_and_rows: list[float]) -> dict[str, float]:
    """Each subject's instance loss this step (several subjects only; a subject with no rows this step is left out)."""
    if len(run.subjects) < 2:
        return {}
    pairs = zip(sums_and_rows[::2], sums_and_rows[1::2])
    return {d.subject.identifier: total / rows for d, (total, rows) in zip(run.subjects, pairs) if rows > 0}


def _parameters(optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _apply_update(run: _Run, scaler, values: torch.Tensor) -> bool:
    """Clip and step, or skip a non-finite step (weights stay the last good ones); stop after too many."""
    config, loop, optimizer = run.config, run.loop, run.optimizer
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(_parameters(optimizer), config.max_grad_norm or float("inf"))
    if not (torch.isfinite(values).all() and torch.isfinite(grad_norm)):
        optimizer.zero_grad(set_to_none=True)
        scaler.update()
        loop.bad_steps += 1
        if loop.bad_steps >= config.max_bad_steps:
            folder = _save(run)
            raise TrainingError(
                f"the loss was not finite for {loop.bad_steps} steps in a row; stopped at step {loop.step} and kept "
                f"the last good weights in {folder.name if folder else 'the last checkpoint'}",
                "lower the learning rate, or turn mixed precision off",
            )
        return False
    loop.bad_steps = 0
    scaler.step(optimizer)
    scaler.update()
    run.lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    loop.step += 1
    return True
