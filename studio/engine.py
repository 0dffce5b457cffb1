"""The Studio facade: the one API the UI, the CLI and the tests use.

Every method takes the acting `user` first and only ever touches that user's
folder, so the same code serves one local user and many visitors of a shared
Space. The engine never imports gradio.
"""
from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from studio.config import Preset, ResolvedConfig, list_presets, resolve_config
from studio.events import EventLog, Event, read_events
from studio.jobs import Job, JobQueue
from studio.models.sources import ASSETS_DIR, ModelSource, resolve_source
from studio.workspace import LOCAL_USER, NotFound, Workspace, default_root

DEMO_DIR = ASSETS_DIR / "demo-subject"


@dataclass(frozen=True)
class RunState:
    run_id: str
    status: str  # queued | running | paused | finished | failed | cancelled | interrupted
    queue_position: int  # 0 while running, n = jobs ahead, -1 when not queued
    step: int
    max_steps: int
    message: str = ""


@dataclass(frozen=True)
class ModelChoice:
    id: str  # "base", "run:<id>", "run:<id>@<step>"
    label: str


class Studio:
    def __init__(
        self,
        root: Path | str | None = None,
        *,
        base_model: str | None = None,
        base_config: str | None = None,
        allow_pickle: bool = False,
        shared: bool = False,
        device: str | None = None,
        model_roots: Sequence[Path] = (),
    ) -> None:
        self.workspace = Workspace(Path(root) if root else default_root())
        self.shared = shared
        self.allow_pickle = allow_pickle and not shared  # a Space never unpickles
        self.base_config = base_config
        self.device = device
        # The operator's base model is trusted (it comes from the command line, not a visitor); on a shared
        # Space, visitors may only name models inside the assets folder, the operator's model and `model_roots`.
        self.base_model = resolve_source(base_model, config_dir=base_config, allow_pickle=self.allow_pickle)
        own = [Path(self.base_model.location).parent] if self.base_model.kind in ("folder", "single_file") else []
        self.model_roots = [ASSETS_DIR, *own, *map(Path, model_roots)] if shared else None
        self.jobs = JobQueue()
        self._cache = None
        self._cache_lock = threading.Lock()
        self._tokenizers: dict[str, Any] = {}

    # -- base models -----------------------------------------------------------
    def source(self, spec: str | None = None) -> ModelSource:
        if spec is None:
            return self.base_model
        return resolve_source(spec, config_dir=self.base_config, allow_pickle=self.allow_pickle, allowed_roots=self.model_roots)

    def tokenizer(self, spec: str | None = None):
        """The base model's (first) tokenizer, loaded alone: identifier checks must not load a whole model."""
        source = self.source(spec)
        if source.label not in self._tokenizers:
            from transformers import CLIPTokenizer

            if source.kind in ("builtin", "folder"):
                self._tokenizers[source.label] = CLIPTokenizer.from_pretrained(Path(source.location) / "tokenizer")
            else:
                from studio.models.families import load_components

                self._tokenizers[source.label] = load_components(source).tokenizers[0]
        return self._tokenizers[source.label]

    def native_resolution(self) -> int:
        """The base model's training size, read from its configs without loading it (512 / 1024 when unknown)."""
        source = self.base_model
        if source.kind in ("builtin", "folder"):
            try:
                unet = json.loads((Path(source.location) / "unet" / "config.json").read_text())
                vae = json.loads((Path(source.location) / "vae" / "config.json").read_text())
                return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
            except (OSError, KeyError, ValueError):
                pass
        return 1024 if source.family == "sdxl" else 512

    # -- presets and identifiers ---------------------------------------------------
    def presets(self, user: str = LOCAL_USER) -> dict[str, Preset]:
        return list_presets(self.workspace.presets_dir(user))

    def resolve(self, presets: Sequence[str], overrides: dict[str, Any] | None = None, *, num_images: int = 0,
                user: str = LOCAL_USER) -> ResolvedConfig:
        return resolve_config(list(presets), overrides, num_images=num_images, user_preset_dir=self.workspace.presets_dir(user))

    def check_identifier(self, identifier: str, class_noun: str, instance_prompt: str | None = None, base_model: str | None = None):
        from studio.training.identifier import check_identifier

        prompt = instance_prompt or f"a photo of {identifier} {class_noun}"
        return check_identifier(self.tokenizer(base_model), identifier, class_noun, prompt)

    # -- photos --------------------------------------------------------------------
    def add_photos(self, user: str, files: Sequence[Path | str], dataset_id: str | None = None, *, max_files: int = 100) -> str:
        """Copy uploaded files (zips are unpacked safely) into a photo set; returns its id. Bad files are kept
        and reported by `curate`, so one bad photo never costs the others."""
        from studio.data.zipsafe import extract_photos_from_zip
        from studio.paths import safe_join, safe_name

        if dataset_id is None:
            dataset_id, folder = self.workspace.new_dataset(user)
        else:
            folder = self.workspace.dataset_dir(user, dataset_id)
        plain = [f for f in files if Path(f).suffix.lower() != ".zip"]
        if len(list(folder.iterdir())) + len(plain) > max_files:
            raise ValueError(f"a photo set holds at most {max_files} files; upload fewer or start a new set")
        for item in files:
            path = Path(item)
            if path.suffix.lower() == ".zip":
                extract_photos_from_zip(path, folder, max_files=max_files)
                continue
            name = safe_name(path.name)
            if name.lower() == "crops.json":  # the studio's own file: an upload must not pose as it
                name = "uploaded-crops.json"
            target = safe_join(folder, name)
            stem, n = target.stem, 1
            while target.exists():
                target = target.with_name(f"{stem}-{n}{target.suffix}")
                n += 1
            shutil.copyfile(path, target)
        return dataset_id

    def add_demo_photos(self, user: str) -> str:
        """The built-in demo subject's training pictures, as a new photo set."""
        return self.add_photos(user, sorted(p for p in DEMO_DIR.iterdir() if p.suffix in {".png", ".txt"}))  # + captions

    def demo_settings(self) -> tuple[Path, list[str], dict[str, Any]]:
        """The built-in demo subject: its pictures, preset and the settings that go with them."""
        from studio.world import demo

        overrides = {"identifier": demo.DEMO_IDENTIFIER, "class_noun": demo.DEMO_CLASS,
                     "preview_prompts": [demo.instance_prompt("{identifier}"),
                                         f"a photo of a small {{identifier}} {demo.DEMO_CLASS} on a pink background"]}
        return DEMO_DIR, ["demo-full"], overrides

    def curate(self, user: str, dataset_id: str, subject_type: str = "object", resolution: int = 512):
        from studio.data.curate import curate, list_dataset_files

        files = list_dataset_files(self.workspace.dataset_dir(user, dataset_id))
        return curate(files, subject_type, resolution)

    def photo_path(self, user: str, dataset_id: str, name: str) -> Path:
        from studio.paths import safe_join

        path = safe_join(self.workspace.dataset_dir(user, dataset_id), name)
        if not path.is_file():
            raise NotFound(f"no photo {name!r}")
        return path

    CROPS_FILE = "crops.json"  # manual crops beside the photos: {photo name: [left, top, right, bottom]}
    _crops_lock = threading.Lock()  # one crops.json read-modify-write at a time

    def _edit_target(self, user: str, dataset_id: str, name: str) -> tuple[Path, Path]:
        """(photo set folder, photo) for an edit; only a photo of this user's set qualifies (no caption or crops file)."""
        from studio.data.curate import list_dataset_files

        if not isinstance(name, str) or not name:
            raise ValueError("pick a photo first")
        folder = self.workspace.dataset_dir(user, dataset_id)
        path = self.photo_path(user, dataset_id, name)
        if path.parent != folder or name == self.CROPS_FILE or path not in list_dataset_files(folder):
            raise NotFound(f"no photo {name!r}")
        return folder, path

    def set_caption(self, user: str, dataset_id: str, name: str, caption: str | None) -> str | None:
        """Write `<stem>.txt` beside the photo (whitespace tidied); an empty caption removes it. Returns the caption kept."""
        from studio.data.curate import CAPTION_SUFFIX, MAX_CAPTION_CHARS
        from studio.paths import safe_join

        folder, path = self._edit_target(user, dataset_id, name)
        text = " ".join(str(caption or "").split())
        if len(text) > MAX_CAPTION_CHARS:
            raise ValueError(f"a caption holds at most {MAX_CAPTION_CHARS} characters; this one has {len(text)}")
        try:  # training fills the caption in like the instance prompt
            text.format(identifier="sks", class_noun="dog")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError("a caption may use {identifier} and {class_noun} in braces, and no other braces") from exc
        target = safe_join(folder, path.with_suffix(CAPTION_SUFFIX).name)
        if target.parent != folder:
            raise ValueError(f"{name}: this photo's name leaves no room for a caption file; rename it")
        if not text:
            target.unlink(missing_ok=True)
            return None
        target.write_text(text + "\n", encoding="utf-8")
        return text

    def set_crop(self, user: str, dataset_id: str, name: str, box: Sequence[float] | None) -> list[int] | None:
        """Override the photo's training crop with `box` (left, top, right, bottom in upright pixels), checked against
        the photo; None goes back to the automatic crop. Returns the box stored (trimmed to an exact square)."""
        from studio.data.faces import InvalidCropBox, validate_crop_box
        from studio.data.images import load_photo

        folder, path = self._edit_target(user, dataset_id, name)
        stored = None
        if box is not None:
            size = load_photo(path).size  # PhotoRejected (a ValueError) for a photo that can't be trained on anyway
            try:
                stored = validate_crop_box(size, list(box)).to_list()
            except InvalidCropBox as exc:
                raise InvalidCropBox(f"{name}: {exc}") from exc
            except TypeError as exc:
                raise InvalidCropBox(f"{name}: a crop box needs 4 numbers (left, top, right, bottom)") from exc
        with self._crops_lock:
            self._store_crop(folder, name, stored)
        return stored

    def _store_crop(self, folder: Path, name: str, box: list[int] | None) -> None:
        crops = self.read_crops(folder)
        if box is None:
            crops.pop(name, None)
        else:
            crops[name] = box
        target = folder / self.CROPS_FILE
        if crops:
            tmp = target.with_name(f".{self.CROPS_FILE}.tmp")
            tmp.write_text(json.dumps(crops, indent=2, sort_keys=True), encoding="utf-8")
            tmp.replace(target)
        else:
            target.unlink(missing_ok=True)

    def crops(self, user: str, dataset_id: str) -> dict[str, list[float]]:
        """The photo set's manual crops: {photo name: [left, top, right, bottom]}."""
        return self.read_crops(self.workspace.dataset_dir(user, dataset_id))

    @classmethod
    def read_crops(cls, folder: Path) -> dict[str, list[float]]:
        """`crops.json` in a folder of photos (a photo set or a CLI images folder); {} when there is none.
        A damaged file is a ValueError naming it, so a run fails clearly instead of ignoring the crops."""
        path = Path(folder) / cls.CROPS_FILE
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{cls.CROPS_FILE} in the photo folder is not valid JSON ({exc}); fix or delete it") from exc
        if not isinstance(data, dict) or not all(
                isinstance(k, str) and isinstance(v, list) and len(v) == 4
                and all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in v) for k, v in data.items()):
            raise ValueError(f"{cls.CROPS_FILE} must map photo names to [left, top, right, bottom]; fix or delete it")
        return {k: list(v) for k, v in data.items()}

    # -- training ------------------------------------------------------------------
    def start_training(self, user: str, dataset_id: str, presets: Sequence[str] = (), overrides: dict[str, Any] | None = None,
                       *, base_model: str | None = None, crops: dict[str, Sequence[float]] | None = None) -> str:
        """Queue a run; returns its id at once. Settings are checked now, so a typo fails before the queue."""
        source = self.source(base_model)
        self.workspace.dataset_dir(user, dataset_id)
        self.resolve(presets, overrides, num_images=1, user=user)  # fail fast on bad settings
        run_id, run_dir = self.workspace.new_run(user)
        meta = {"run_id": run_id, "owner": user, "dataset_id": dataset_id, "presets": list(presets),
                "overrides": dict(overrides or {}), "base_model": source.location if source.kind != "builtin" else None,
                "crops": crops or {}, "created": time.time()}
        (run_dir / "run.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        try:
            self._submit(user, run_id, run_dir, resume=False)
        except Exception:
            self.workspace.delete_run(user, run_id)  # a refused submission leaves no empty run behind
            raise
        return run_id

    def resume_training(self, user: str, run_id: str) -> str:
        """Continue an interrupted or stopped run from its last complete checkpoint."""
        run_dir = self.workspace.run_dir(user, run_id)
        self._submit(user, run_id, run_dir, resume=True)
        return run_id

    def train_folder(self, images_dir: Path, output_dir: Path, presets: Sequence[str] = (), overrides: dict[str, Any] | None = None,
                     *, base_model: str | None = None, resume: bool = False, emit=None, commands=None):
        """Train in the caller's thread with the run folder at `output_dir` (the local CLI). With `resume`,
        continue the run already there from its last complete checkpoint."""
        from studio.training.commands import RunCommands
        from studio.training.runner import run_training

        if self.shared:
            raise PermissionError("folder runs are for the local CLI only")
        output_dir = Path(output_dir).resolve()
        meta_path = output_dir / "run.json"
        if resume:
            if not meta_path.exists():
                raise NotFound(f"nothing to resume in {output_dir}: it has no run.json; start a new run there")
        else:
            source = self.source(base_model)
            self.resolve(presets, overrides, num_images=1)
            if (output_dir / "events.jsonl").exists():
                raise ValueError(f"{output_dir} already holds a run; use --resume to continue it or pick another folder")
            output_dir.mkdir(parents=True, exist_ok=True)
            meta = {"run_id": output_dir.name, "owner": LOCAL_USER, "images_dir": str(Path(images_dir).resolve()),
                    "presets": list(presets), "overrides": dict(overrides or {}),
                    "base_model": source.location if source.kind != "builtin" else None, "crops": {}, "created": time.time()}
            meta_path.write_text(json.dumps(meta, indent=2), encoding="utf-8")
        log = EventLog(output_dir / "events.jsonl")
        return run_training(self, LOCAL_USER, output_dir, log, commands or RunCommands(), resume=resume, emit=emit)

    def _submit(self, user: str, run_id: str, run_dir: Path, *, resume: bool) -> None:
        from studio.training.runner import run_training

        log = EventLog(run_dir / "events.jsonl")
        self.jobs.submit(Job(run_id, user, log, lambda job: run_training(self, user, run_dir, job.log, job.commands, resume=resume)))

    def _job(self, user: str, run_id: str) -> Job:
        self.workspace.run_dir(user, run_id)  # ownership check
        job = self.jobs.get(run_id)
        if job is None or job.owner != user:
            raise NotFound(f"run {run_id!r} is not queued or training")
        return job

    def pause(self, user: str, run_id: str) -> None:
        self._job(user, run_id).commands.pause()

    def resume(self, user: str, run_id: str) -> None:
        self._job(user, run_id).commands.resume()

    def stop(self, user: str, run_id: str) -> None:
        job = self._job(user, run_id)
        if not self.jobs.cancel_waiting(run_id):
            job.commands.stop()

    def sample_now(self, user: str, run_id: str) -> None:
        self._job(user, run_id).commands.sample_now()

    def events(self, user: str, run_id: str, cursor: int = 0) -> tuple[list[Event], int]:
        """Events after `cursor` and the next cursor; works for live and finished runs alike."""
        job = self.jobs.get(run_id)
        if job is not None and job.owner == user:
            return job.log.since(cursor)
        path = self.workspace.run_dir(user, run_id) / "events.jsonl"
        events = read_events(path) if path.exists() else []
        return events[cursor:], len(events)

    def run_state(self, user: str, run_id: str) -> RunState:
        events, _ = self.events(user, run_id)
        job = self.jobs.get(run_id)
        steps = [e for e in events if e.kind == "step"]
        started = [e for e in events if e.kind == "started"]
        step = steps[-1].step if steps else (started[-1].resumed_from if started else 0)
        max_steps = started[-1].max_steps if started else 0
        terminal = next((e for e in reversed(events) if e.kind in ("finished", "failed", "cancelled")), None)
        position = self.jobs.position(run_id) if job is not None and job.owner == user else -1
        if job is not None and job.owner == user and job.status != "done":
            status = "queued" if job.status == "queued" else ("paused" if job.commands.should_pause() else "running")
            if terminal is not None and job.status == "running" and terminal.time > (started[-1].time if started else 0):
                status = terminal.kind
        elif terminal is not None:
            status = terminal.kind
        else:
            status = "interrupted" if events else "queued"
        message = getattr(terminal, "error", "") if terminal is not None and status == "failed" else ""
        return RunState(run_id, status, position, step, max_steps, message)

    def active_run(self, user: str) -> str | None:
        """The user's queued or running run, so a reopened page can re-attach to it."""
        for run_id in self.workspace.run_ids(user):
            job = self.jobs.get(run_id)
            if job is not None and job.owner == user and job.status != "done":
                return run_id
        return None

    def runs(self, user: str) -> list[dict[str, Any]]:
        out = []
        for run_id in self.workspace.run_ids(user):
            run_dir = self.workspace.run_dir(user, run_id)
            meta = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
            state = self.run_state(user, run_id)
            out.append({"run_id": run_id, "status": state.status, "step": state.step, "max_steps": state.max_steps,
                        "presets": meta.get("presets", []), "created": meta.get("created")})
        return out

    def run_config(self, user: str, run_id: str) -> dict[str, Any]:
        path = self.workspace.run_dir(user, run_id) / "config.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def run_file(self, user: str, run_id: str, relative: str) -> Path:
        """A file inside the user's run folder (previews, outputs), by its run-relative path."""
        from studio.paths import safe_join

        path = safe_join(self.workspace.run_dir(user, run_id), *Path(relative).parts)
        if not path.is_file():
            raise NotFound(f"no file {relative!r} in run {run_id}")
        return path

    def outputs(self, user: str, run_id: str) -> dict[str, Path]:
        folder = self.workspace.run_dir(user, run_id) / "output"
        if not folder.is_dir():
            return {}
        return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}

    def delete_run(self, user: str, run_id: str) -> None:
        job = self.jobs.get(run_id)
        if job is not None and job.owner == user and job.status != "done":
            raise ValueError("stop the run before deleting it")
        self.workspace.delete_run(user, run_id)

    # -- models and drawing ----------------------------------------------------------
    def models(self, user: str) -> list[ModelChoice]:
        from studio.inference.models import list_models

        return list_models(self, user)

    def _pipelines(self):
        with self._cache_lock:
            if self._cache is None:
                from studio.inference.pipelines import PipelineCache
                from studio.training.hardware import pick_device

                self._cache = PipelineCache(pick_device(self.device))
            return self._cache

    def generate(self, user: str, model_id: str, settings):
        from studio.inference.generate import generate
        from studio.inference.models import model_ref

        return generate(self._pipelines(), model_ref(self, user, model_id), settings)

    def compare(self, user: str, model_ids: Sequence[str], prompts: Sequence[str], settings, seeds: Sequence[int]):
        from studio.inference.generate import compare
        from studio.inference.models import model_ref

        refs = [model_ref(self, user, m) for m in model_ids]
        return compare(self._pipelines(), refs, list(prompts), settings, list(seeds))

    def inpaint(self, user: str, model_id: str, image, mask, settings, strength: float = 0.85, *, inpaint_base: str | None = None):
        """Repaint the mask with the subject; `inpaint_base` puts a trained LoRA on a dedicated inpainting model."""
        import dataclasses

        from studio.inference.generate import inpaint
        from studio.inference.models import model_ref

        ref = model_ref(self, user, model_id)
        if inpaint_base:
            if ref.lora_file is None and model_id != "base":
                raise ValueError("an inpainting base model can only be combined with a LoRA run")
            source = self.source(inpaint_base)
            ref = dataclasses.replace(ref, base=source, key=f"{ref.key}|{source.location}", label=f"{ref.label} on {source.label}")
        return inpaint(self._pipelines(), ref, image, mask, settings, strength)
