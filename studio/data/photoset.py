"""A user's photo sets: add photos (zips unpacked safely), check them, captions, manual crops, the demo set.

A photo set is a folder of the user's workspace, named by an id. Beside the
photos it holds `<stem>.txt` captions and `crops.json` (manual training crops);
both are edited only through this module, one read-modify-write at a time.
"""
from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path
from typing import Any, Sequence

from studio.data.curate import CAPTION_SUFFIX, MAX_CAPTION_CHARS, CurationReport, curate, list_dataset_files
from studio.models.sources import ASSETS_DIR
from studio.paths import safe_join, safe_name
from studio.workspace import NotFound, Workspace

CROPS_FILE = "crops.json"  # manual crops beside the photos: {photo name: [left, top, right, bottom]}
DEMO_DIR = ASSETS_DIR / "demo-subject"
DEMO_PRESET = "demo-full"


def read_crops(folder: Path) -> dict[str, list[float]]:
    """`crops.json` in a folder of photos (a photo set or a CLI images folder); {} when there is none.
    A damaged file is a ValueError naming it, so a run fails clearly instead of ignoring the crops."""
    path = Path(folder) / CROPS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{CROPS_FILE} in the photo folder is not valid JSON ({exc}); fix or delete it") from exc
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and len(v) == 4
            and all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in v) for k, v in data.items()):
        raise ValueError(f"{CROPS_FILE} must map photo names to [left, top, right, bottom]; fix or delete it")
    return {k: list(v) for k, v in data.items()}


def demo_settings() -> tuple[Path, list[str], dict[str, Any]]:
    """The built-in demo subject: its pictures, its preset and the overrides that go with them (none: the demo
    presets carry the subject's identifier, class noun and preview prompts, so every value's source is the preset)."""
    return DEMO_DIR, [DEMO_PRESET], {}


class PhotoSets:
    """The photo sets of every user of one workspace; each call names the user, and sees only their sets."""

    _crops_lock = threading.Lock()

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def folder(self, user: str, dataset_id: str) -> Path:
        return self.workspace.dataset_dir(user, dataset_id)

    def latest(self, user: str) -> str | None:
        """The user's newest photo set that holds something, so a reopened page finds the photos again."""
        for dataset_id in self.workspace.dataset_ids(user):
            if list_dataset_files(self.folder(user, dataset_id)):
                return dataset_id
        return None

    def add(self, user: str, files: Sequence[Path | str], dataset_id: str | None = None, *, max_files: int = 100) -> str:
        """Copy uploaded files (zips are unpacked safely) into a photo set; returns its id. Bad files are kept
        and reported by `check`, so one bad photo never costs the others."""
        from studio.data.zipsafe import extract_photos_from_zip

        if dataset_id is None:
            dataset_id, folder = self.workspace.new_dataset(user)
        else:
            folder = self.folder(user, dataset_id)
        plain = [f for f in files if Path(f).suffix.lower() != ".zip"]
        if len(list(folder.iterdir())) + len(plain) > max_files:
            raise ValueError(f"a photo set holds at most {max_files} files; upload fewer or start a new set")
        for item in files:
            path = Path(item)
            if path.suffix.lower() == ".zip":
                extract_photos_from_zip(path, folder, max_files=max_files)
                continue
            name = safe_name(path.name)
            if name.lower() == CROPS_FILE:  # the studio's own file: an upload must not pose as it
                name = "uploaded-crops.json"
            target = safe_join(folder, name)
            stem, n = target.stem, 1
            while target.exists():
                target = target.with_name(f"{stem}-{n}{target.suffix}")
                n += 1
            shutil.copyfile(path, target)
        return dataset_id

    def count(self, user: str, dataset_id: str) -> int:
        """The files in a photo set that may be photos (the check says which are usable)."""
        return sum(1 for p in list_dataset_files(self.folder(user, dataset_id)) if p.name != CROPS_FILE)

    def add_demo(self, user: str) -> str:
        """The built-in demo subject's training pictures (and their captions), as a new photo set."""
        return self.add(user, sorted(p for p in DEMO_DIR.iterdir() if p.suffix in {".png", ".txt"}))

    def check(self, user: str, dataset_id: str, subject_type: str = "object", resolution: int = 512) -> CurationReport:
        report = curate(list_dataset_files(self.folder(user, dataset_id)), subject_type, resolution)
        report.verdicts = [v for v in report.verdicts if v.name != CROPS_FILE]  # the crops file is not a photo
        return report

    def photo_path(self, user: str, dataset_id: str, name: str) -> Path:
        path = safe_join(self.folder(user, dataset_id), name)
        if not path.is_file():
            raise NotFound(f"no photo {name!r}")
        return path

    def _edit_target(self, user: str, dataset_id: str, name: str) -> tuple[Path, Path]:
        """(photo set folder, photo) for an edit; only a photo of this user's set qualifies (no caption or crops file)."""
        if not isinstance(name, str) or not name:
            raise ValueError("pick a photo first")
        folder = self.folder(user, dataset_id)
        path = self.photo_path(user, dataset_id, name)
        if path.parent != folder or name == CROPS_FILE or path not in list_dataset_files(folder):
            raise NotFound(f"no photo {name!r}")
        return folder, path

    def set_caption(self, user: str, dataset_id: str, name: str, caption: str | None) -> str | None:
        """Write `<stem>.txt` beside the photo (whitespace tidied); an empty caption removes it. Returns the caption kept."""
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
            _store_crop(folder, name, stored)
        return stored

    def crops(self, user: str, dataset_id: str) -> dict[str, list[float]]:
        """The photo set's manual crops: {photo name: [left, top, right, bottom]}."""
        return read_crops(self.folder(user, dataset_id))


def _store_crop(folder: Path, name: str, box: list[int] | None) -> None:
    crops = read_crops(folder)
    if box is None:
        crops.pop(name, None)
    else:
        crops[name] = box
    target = folder / CROPS_FILE
    if crops:
        tmp = target.with_name(f".{CROPS_FILE}.tmp")
        tmp.write_text(json.dumps(crops, indent=2, sort_keys=True), encoding="utf-8")
        tmp.replace(target)
    else:
        target.unlink(missing_ok=True)
