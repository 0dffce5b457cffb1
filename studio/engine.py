"""The Studio facade: the one API the UI, the CLI and the tests use.

It only routes: every method takes the acting `user` first, checks that the
ids it is given name that user's things, and hands the work to the part that
owns it (photo sets, the model catalogue, run folders, the job queue, the
drawing pipelines). The same code serves one local user and many visitors of a
shared Space. The engine never imports gradio.
"""
from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any, Sequence

from studio.concepts import Concept, ConceptError, check_concepts
from studio.config import Preset, ResolvedConfig, list_presets, resolve_config
from studio.data.photoset import PhotoSets, demo_settings
from studio.downloads import Download, run_downloads
from studio.events import Event, EventLog
from studio.inference.models import DrawableModels, ModelChoice
from studio.jobs import Job, JobQueue
from studio.models.catalog import ModelCatalog
from studio.models.sources import ModelSource
from studio.paths import safe_join
from studio.runs import RunFolder, RunMeta, RunState, RunSummary, clean_name, default_name, derive_state
from studio.training.commands import RunCommands
from studio.training.distributed import SINGLE, World
from studio.training.identifier import IdentifierReport, check_identifier
from studio.training.runner import TrainingEnv, run_training
from studio.workspace import LOCAL_USER, NotFound, Workspace, default_root


def _job_devices(devices: str | Sequence[str] | None, device: str | None):
    from studio.training.devices import check_devices, parse_devices, visible_devices

    if devices is None:
        return lambda: visible_devices(device)  # counted when the first job is queued
    listed = parse_devices(devices if isinstance(devices, str) else ",".join(devices))
    check_devices(listed)
    return listed


def _own_subject(concepts: Sequence[Concept]) -> dict[str, Any]:
    """The run's own settings from its first concept: its identifier and class noun (and, when it is the only one,
    its prompts and prior setting; with several, those stay the concept's own)."""
    own = concepts[0].overrides()
    return own if len(concepts) == 1 else {"identifier": own["identifier"], "class_noun": own["class_noun"]}


class Studio:
    def __init__(self, root: Path | str | None = None, *, base_model: str | None = None, base_config: str | None = None,
                 allow_pickle: bool = False, shared: bool = False, device: str | None = None,
                 model_roots: Sequence[Path] = (), devices: str | Sequence[str] | None = None) -> None:
        """`devices` (or STUDIO_DEVICES, as "cuda:0,cuda:1"): train one job at a time on each; unknown or absent
        devices are refused here, before anything is queued. Default: every visible GPU, else `device`."""
        self.workspace = Workspace(Path(root) if root else default_root())
        self.shared = shared
        self.device = device
        self.base_models = ModelCatalog(base_model, base_config=base_config, allow_pickle=allow_pickle, shared=shared,
                                        model_roots=model_roots)
        self.photos = PhotoSets(self.workspace)
        self.drawable = DrawableModels(self.base_models, self.workspace, local_paths=not shared)
        self.training = TrainingEnv(self.base_models, self.workspace.cache_dir, device)
        self.jobs = JobQueue(_job_devices(devices, device))
        self._cache = None
        self._cache_lock = threading.Lock()

    @property
    def base_model(self) -> ModelSource:
        return self.base_models.default

    # -- presets and identifiers -------------------------------------------------------
    def presets(self, user: str = LOCAL_USER) -> dict[str, Preset]:
        return list_presets(self.workspace.presets_dir(user))

    def resolve(self, presets: Sequence[str], overrides: dict[str, Any] | None = None, *, num_images: int = 0,
                user: str = LOCAL_USER) -> ResolvedConfig:
        return resolve_config(list(presets), overrides, num_images=num_images, user_preset_dir=self.workspace.presets_dir(user))

    def check_identifier(self, identifier: str, class_noun: str, instance_prompt: str | None = None,
                         base_model: str | None = None) -> IdentifierReport:
        prompt = instance_prompt or f"a photo of {identifier} {class_noun}"
        return check_identifier(self.base_models.tokenizer(base_model), identifier, class_noun, prompt)

    @staticmethod
    def demo_settings() -> tuple[Path, list[str], dict[str, Any]]:
        return demo_settings()

    # -- training ----------------------------------------------------------------------
    def start_training(self, user: str, dataset_id: str, presets: Sequence[str] = (), overrides: dict[str, Any] | None = None,
                       *, base_model: str | None = None, crops: dict[str, Sequence[float]] | None = None, name: str = "",
                       more_subjects: Sequence[Concept] = ()) -> str:
        """Queue a run; returns its id at once. Settings are checked now, so a typo fails before the queue.
        `more_subjects`: other subjects to teach in the same run, each a photo set (Concept.dataset_id) with its own
        identifier and class noun."""
        source = self.base_models.source(base_model)
        self.photos.folder(user, dataset_id)
        config = self.resolve(presets, overrides, num_images=1, user=user).config  # fail fast on bad settings
        if any(c.images or not c.dataset_id for c in more_subjects):  # a Space must never read a server folder
            raise ValueError("each further subject is one of your photo sets (its dataset_id), not a folder")
        concepts = self._checked_concepts([Concept.of_config(config, dataset_id=dataset_id), *more_subjects], config,
                                          lambda c: self.photos.folder(user, c.dataset_id)) if more_subjects else []
        run_id, run_dir = self.workspace.new_run(user)
        run = RunFolder(run_dir)
        run.write_meta(RunMeta(run_id, user, tuple(presets), dict(overrides or {}), self.base_models.reference(source),
                               dataset_id=dataset_id, crops={k: list(v) for k, v in (crops or {}).items()},
                               name=clean_name(name) or default_name(config, presets),
                               concepts=[c.to_dict() for c in concepts]))
        try:
            self._submit(user, run, resume=False)
        except Exception:
            self.workspace.delete_run(user, run_id)  # a refused submission leaves no empty run behind
            raise
        return run_id

    def resume_training(self, user: str, run_id: str) -> str:
        """Continue a stopped, failed or interrupted run from its last complete checkpoint to its end."""
        state = self.run_state(user, run_id)
        if not state.status.is_terminal:
            raise ValueError(f"run {run_id} is {state.status}; only a stopped run can be resumed")
        if not state.resumable:
            raise ValueError(f"run {run_id} is {state.status} at step {state.step} of {state.max_steps}: nothing to resume")
        self._submit(user, RunFolder(self.workspace.run_dir(user, run_id)), resume=True)
        return run_id

    def train_folder(self, images_dir: Path | None, output_dir: Path, presets: Sequence[str] = (),
                     overrides: dict[str, Any] | None = None, *, base_model: str | None = None, resume: bool = False,
                     emit=None, commands=None, world: World = SINGLE, concepts: Sequence[Concept] = ()):
        """Train in the caller's thread with the run folder at `output_dir` (the local CLI). With `resume`,
        continue the run already there from its last complete checkpoint. Under `accelerate launch`, every process
        calls this with its `world`; each checks everything first, then only the main process writes.
        `concepts` (studio.concepts.load_concepts) teaches several subjects: the first's photos, identifier and class
        noun are the run's own, in place of `images_dir`."""
        if self.shared:
            raise PermissionError("folder runs are for the local CLI only")
        run = RunFolder(Path(output_dir).resolve())
        if resume:
            if not run.has_meta():
                raise NotFound(f"nothing to resume in {run.path}: it has no run.json; start a new run there")
            meta = run.read_meta()
            world.check_batch(self.resolve(meta.presets, meta.overrides, num_images=1).config.batch_size)
        else:
            source = self.base_models.source(base_model)
            if concepts:
                images_dir, overrides = Path(concepts[0].images), {**(overrides or {}), **_own_subject(concepts)}
            if images_dir is None:
                raise ValueError("give the folder of your subject's photos (or a concepts file)")
            config = self.resolve(presets, overrides, num_images=1).config
            world.check_batch(config.batch_size)
            checked = self._checked_concepts(list(concepts), config, lambda c: Path(c.images)) if len(concepts) > 1 else []
            if run.has_events():
                raise ValueError(f"{run.path} already holds a run; use --resume to continue it or pick another folder")
            world.barrier()  # every process has checked the folder before the main one writes to it
            if world.is_main:
                run.write_meta(RunMeta(run.run_id, LOCAL_USER, tuple(presets), dict(overrides or {}),
                                       self.base_models.reference(source), images_dir=str(Path(images_dir).resolve()),
                                       concepts=[c.to_dict() for c in checked]))
            world.barrier()
        log = EventLog(run.events_file if world.is_main else None)
        return self._train(LOCAL_USER, run, log, commands or RunCommands(), resume=resume, emit=emit, world=world)

    def _train(self, user: str, run: RunFolder, log: EventLog, commands: RunCommands, *, resume: bool, emit=None,
               world: World = SINGLE, device: str | None = None):
        meta = run.read_meta()
        photos = Path(meta.images_dir) if meta.images_dir else self.photos.folder(user, meta.dataset_id)
        env = dataclasses.replace(self.training, device=device) if device else self.training
        return run_training(env, run, photos, log, commands, presets_dir=self.workspace.presets_dir(user),
                            resume=resume, emit=emit, world=world,
                            concept_photos=lambda c: Path(c.images) if c.images else self.photos.folder(user, c.dataset_id))

    @staticmethod
    def _checked_concepts(concepts: list[Concept], config, folder_of) -> list[Concept]:
        """Concepts that can train together, each with photos; a ConceptError names the concept and the key."""
        from studio.data.curate import list_dataset_files

        check_concepts(concepts, config)
        for index, concept in enumerate(concepts):
            folder = folder_of(concept)
            if not Path(folder).is_dir():
                raise ConceptError(f"concept {index + 1} ({concept.identifier}): images = {folder} is not a folder; "
                                   "give the folder that holds this subject's photos")
            if not list_dataset_files(folder):
                key = "images" if concept.images else "photo set"
                raise ConceptError(f"concept {index + 1} ({concept.identifier}): {key} holds no photos; add 3-20 "
                                   "photos of this subject")
        return concepts

    def _submit(self, user: str, run: RunFolder, *, resume: bool) -> None:
        log = EventLog(run.events_file)
        self.jobs.submit(Job(run.run_id, user, log, lambda job: self._train(user, run, job.log, job.commands,
                                                                             resume=resume, device=job.device)))

    def _live_job(self, user: str, run_id: str) -> Job | None:
        """The run's job while it is queued or training (and the user's own), else None."""
        job = self.jobs.get(run_id)
        return job if job is not None and job.owner == user and job.active else None

    def _job(self, user: str, run_id: str) -> Job:
        self.workspace.run_dir(user, run_id)  # ownership check
        job = self._live_job(user, run_id)
        if job is None:
            raise NotFound(f"run {run_id!r} is not queued or training")
        return job

    def pause(self, user: str, run_id: str) -> None:
        self._job(user, run_id).commands.pause()

    def resume(self, user: str, run_id: str) -> None:
        """Go on after Pause; a run that was stopped, failed or cut short continues from its last checkpoint."""
        if self._live_job(user, run_id) is not None:
            self._job(user, run_id).commands.resume()
        else:
            self.resume_training(user, run_id)

    def stop(self, user: str, run_id: str) -> None:
        job = self._job(user, run_id)
        if not self.jobs.cancel_waiting(run_id):
            job.commands.stop()

    def sample_now(self, user: str, run_id: str) -> None:
        self._job(user, run_id).commands.sample_now()

    # -- runs --------------------------------------------------------------------------
    def _run(self, user: str, run_id: str) -> RunFolder:
        return RunFolder(self.workspace.run_dir(user, run_id))

    def events(self, user: str, run_id: str, cursor: int = 0) -> tuple[list[Event], int]:
        """Events after `cursor` and the next cursor; works for live and finished runs alike."""
        run = self._run(user, run_id)
        job = self._live_job(user, run_id)
        if job is not None:  # while it trains, its own log is the fastest source (the file mirrors it)
            return job.log.since(cursor)
        events = run.read_events()  # once it ends, others write too: "Use this checkpoint", `studio score`
        return events[cursor:], len(events)

    def run_state(self, user: str, run_id: str) -> RunState:
        events, _ = self.events(user, run_id)
        job = self.jobs.get(run_id)
        mine = job is not None and job.owner == user
        latest = self._run(user, run_id).latest_checkpoint()
        return derive_state(run_id, events, job_status=job.status if mine else None,
                            paused=mine and job.commands.should_pause(),
                            queue_position=self.jobs.position(run_id) if mine else -1,
                            queue_wait=self.jobs.seconds_to_start(run_id) if mine else None,
                            checkpoint=latest.name if latest is not None else "", job_since=job.submitted if mine else 0.0)

    def active_run(self, user: str) -> str | None:
        """The user's queued or running run, so a reopened page can re-attach to it."""
        return next((run_id for run_id in self.workspace.run_ids(user) if self._live_job(user, run_id)), None)

    def latest_run(self, user: str) -> str | None:
        """The run a page shows when it opens: the one training now, else the newest."""
        ids = self.workspace.run_ids(user)
        return self.active_run(user) or (ids[0] if ids else None)

    def runs(self, user: str) -> list[RunSummary]:
        return [RunSummary.of(self._run(user, r), self.run_state(user, r)) for r in self.workspace.run_ids(user)]

    def run_meta(self, user: str, run_id: str) -> RunMeta:
        return self._run(user, run_id).read_meta()

    def rename_run(self, user: str, run_id: str, name: str) -> str:
        return self._run(user, run_id).rename(name)

    def downloads(self, user: str, run_id: str) -> list[Download]:
        """The finished run's files, each labelled with what it is for (a full model folder as one zip)."""
        run = self._run(user, run_id)
        config = run.train_config()
        if config is None:
            return []
        return run_downloads(run, config.file_stem, config.adapter, config.token if config.learns_token else "",
                             kohya_format=self._base_family(run).kohya_format)

    def _base_family(self, run: RunFolder):
        """The family of the base model a run trained on (SD's when it cannot be read any more, or only the hub
        could tell)."""
        from studio.models.families import FAMILIES

        try:
            return FAMILIES.get(self.base_models.source(run.read_meta().base_model).family, FAMILIES["sd"])
        except (ValueError, OSError):  # the model was moved or deleted since: its files still download
            return FAMILIES["sd"]

    def prompt_suggestions(self, user: str, identifier: str = "", class_noun: str = "") -> list[str]:
        """Prompts for the user's current subject (the newest run's trigger phrase, else the one given) in places
        the base model knows; [] while there is no subject yet."""
        configs = (self._run(user, run_id).train_config() for run_id in self.workspace.run_ids(user))
        trigger = next((c.resolved_instance_prompt for c in configs if c is not None), "")
        if not trigger and identifier.strip() and class_noun.strip():
            trigger = f"a photo of {identifier.strip()} {class_noun.strip()}"
        return [trigger, *(f"{trigger} {c}" for c in self.base_models.example_contexts())] if trigger else []

    def checkpoint_steps(self, user: str, run_id: str) -> list[int]:
        return self._run(user, run_id).checkpoint_steps()

    def run_config(self, user: str, run_id: str) -> dict[str, Any]:
        return self._run(user, run_id).read_config()

    def run_file(self, user: str, run_id: str, relative: str) -> Path:
        """A file inside the user's run folder (previews, outputs), by its run-relative path."""
        path = safe_join(self._run(user, run_id).path, *Path(relative).parts)
        if not path.is_file():
            raise NotFound(f"no file {relative!r} in run {run_id}")
        return path

    def outputs(self, user: str, run_id: str) -> dict[str, Path]:
        return self._run(user, run_id).outputs()

    def delete_run(self, user: str, run_id: str) -> None:
        if self._live_job(user, run_id) is not None:
            raise ValueError("stop the run before deleting it")
        self.workspace.delete_run(user, run_id)

    # -- the scorecard -----------------------------------------------------------------
    def score_run(self, user: str, run_id: str, *, checkpoint: str | None = None, scorer_models: Sequence[str] = (),
                  measure: bool = True):
        """The run's scorecard (studio.evaluation.scorecard.Scorecard): rows, the pick and why. With `measure`,
        checkpoints without a score are scored now (minutes on a real model); without, only known scores show."""
        if measure and self._live_job(user, run_id) is not None:
            raise ValueError("the run is still training; it scores its own checkpoints as it goes")
        return self._score(self._run(user, run_id), user, checkpoint, scorer_models, measure)

    def score_folder(self, run_dir: Path, *, checkpoint: str | None = None, scorer_models: Sequence[str] = (),
                     measure: bool = True):
        """`score_run` for a run folder named by path (the local CLI)."""
        if self.shared:
            raise PermissionError("folder runs are for the local CLI only")
        return self._score(RunFolder(Path(run_dir).resolve()), LOCAL_USER, checkpoint, scorer_models, measure)

    def use_checkpoint(self, user: str, run_id: str, step: int | None) -> list[str]:
        """Make checkpoint `step` the finished run's output (None: the last step); the last step's files stay in
        output/last."""
        if self._live_job(user, run_id) is not None:
            raise ValueError("the run is still training; pick a checkpoint once it has finished")
        return self._use_checkpoint(self._run(user, run_id), step)

    def use_checkpoint_folder(self, run_dir: Path, step: int | None) -> list[str]:
        if self.shared:
            raise PermissionError("folder runs are for the local CLI only")
        return self._use_checkpoint(RunFolder(Path(run_dir).resolve()), step)

    def _run_source(self, run: RunFolder) -> ModelSource:
        if not run.has_meta():
            raise NotFound(f"{run.path} is not a run folder (no run.json)")
        return self.base_models.source(run.read_meta().base_model)

    def _score(self, run: RunFolder, user: str, checkpoint: str | None, scorer_models: Sequence[str], measure: bool):
        from studio.evaluation.rescore import score_run

        source = self._run_source(run)
        # a several-subject run scores every subject as it trains; measuring afterwards knows one subject's photos,
        # so its rows are shown as they were measured, never mixed with one-subject scores
        measure = measure and len(run.read_meta().concepts) < 2
        photos = self._training_photos(run, user) if measure else ()  # only new scores compare with the photos
        return score_run(run, source=source, photos=photos, cache_root=self.workspace.cache_dir, device=self.device,
                         scorer_models=scorer_models, checkpoint=checkpoint, measure=measure)

    def _training_photos(self, run: RunFolder, user: str):
        from studio.evaluation.rescore import training_photos

        meta = run.read_meta()
        photos_dir = Path(meta.images_dir) if meta.images_dir else self.photos.folder(user, meta.dataset_id)
        return training_photos(run, photos_dir, self.base_models.native_resolution(meta.base_model))

    def _use_checkpoint(self, run: RunFolder, step: int | None) -> list[str]:
        from studio.evaluation.keep import use_checkpoint

        return use_checkpoint(run, self._run_source(run), step)

    # -- drawing -----------------------------------------------------------------------
    def models(self, user: str) -> list[ModelChoice]:
        return self.drawable.choices(user)

    def _pipelines(self):
        with self._cache_lock:
            if self._cache is None:
                from studio.inference.pipelines import PipelineCache
                from studio.training.hardware import pick_device

                self._cache = PipelineCache(pick_device(self.device))
            return self._cache

    def generate(self, user: str, model_id: str, settings):
        from studio.inference.generate import generate

        return generate(self._pipelines(), self.drawable.ref(user, model_id), settings)

    def compare(self, user: str, model_ids: Sequence[str], prompts: Sequence[str], settings, seeds: Sequence[int]):
        from studio.inference.generate import compare

        refs = [self.drawable.ref(user, m) for m in model_ids]
        return compare(self._pipelines(), refs, list(prompts), settings, list(seeds))

    def method_runs(self, user: str, run_id: str) -> list[str]:
        """The user's finished runs of the same subject as `run_id` (same identifier and class noun, on the same base
        model), the newest of each method, `run_id`'s own first: what "Compare methods" puts side by side."""
        picked = self._run(user, run_id)
        config, base = picked.train_config(), picked.read_meta().base_model
        if config is None or not self.run_state(user, run_id).status == "finished":
            raise ValueError(f"run {run_id} has not finished; compare methods once it has its output")
        subject = (config.identifier.strip("<>").lower(), config.class_noun.lower())
        found: dict[str, str] = {config.method: run_id}
        for other in self.workspace.run_ids(user):  # newest first
            other_config, folder = self._run(user, other).train_config(), self._run(user, other)
            if (other_config is None or other_config.method in found or folder.read_meta().base_model != base
                    or (other_config.identifier.strip("<>").lower(), other_config.class_noun.lower()) != subject
                    or self.run_state(user, other).status != "finished"):
                continue
            found[other_config.method] = other
        return list(found.values())

    def compare_methods(self, user: str, run_id: str, settings, seeds: Sequence[int] = (0, 1)):
        """The base model and each method's run of this subject (DreamBooth, LoRA, textual inversion...) side by
        side on the subject's prompt, a new place and its class prompt (drift), in one grid."""
        runs = self.method_runs(user, run_id)
        config = self._run(user, run_id).train_config()
        plain = dataclasses.replace(config, method="lora")  # the plain identifier: each model says its own token
        subject = plain.resolved_instance_prompt
        context = self.base_models.example_contexts(self._run(user, run_id).read_meta().base_model)[0]
        prompts = [subject, f"{subject} {context}", plain.resolved_class_prompt]
        from studio.inference.generate import compare

        names = {"full": "DreamBooth (full)", "lora": "LoRA", "textual_inversion": "textual inversion",
                 "pivotal": "pivotal tuning"}
        refs = [self.drawable.ref(user, "base")]
        for other in runs:
            method = self._run(user, other).train_config().method
            refs.append(dataclasses.replace(self.drawable.ref(user, f"run:{other}"), label=names.get(method, method)))
        return compare(self._pipelines(), refs, prompts, settings, list(seeds))

    def inpaint(self, user: str, model_id: str, image, mask, settings, strength: float = 0.85, *, inpaint_base: str | None = None):
        """Repaint the mask with the subject; `inpaint_base` puts a trained LoRA on a dedicated inpainting model."""
        from studio.inference.generate import inpaint

        ref = self.drawable.ref(user, model_id)
        if inpaint_base:
            if ref.lora_file is None and model_id != "base":
                raise ValueError("an inpainting base model can only be combined with a LoRA run")
            source = self.base_models.source(inpaint_base)
            ref = dataclasses.replace(ref, base=source, key=f"{ref.key}|{source.location}", label=f"{ref.label} on {source.label}")
        return inpaint(self._pipelines(), ref, image, mask, settings, strength)
