"""Where the studio keeps things: one folder per user, and a shared cache.

    <root>/cache/class-images/<key>/     class images, shared (they hold no user data)
    <root>/cache/base-previews/<key>/    the untouched model's step-0 previews, shared
    <root>/cache/base-scores/<key>/      the untouched model's scorecard pictures, shared
    <root>/users/<user>/datasets/<id>/   uploaded photos
    <root>/users/<user>/runs/<id>/       a run: config.json, events.jsonl, previews/, checkpoints/, output/
    <root>/users/<user>/presets/         the user's own presets

Every lookup goes through `safe_join` with ids checked against a strict
pattern, so an id from a request can name only that user's own things.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from pathlib import Path

from studio.paths import safe_join

CLASS_IMAGES_CACHE = "class-images"
BASE_PREVIEWS_CACHE = "base-previews"
BASE_SCORES_CACHE = "base-scores"  # the untouched model's scorecard pictures
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{2,63}$")
LOCAL_USER = "local"


class NotFound(KeyError):
    """An id that does not name one of this user's things (or is malformed)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


def default_root() -> Path:
    """STUDIO_HOME, else /data/dreambooth-studio on a Space with persistent storage, else ~/.dreambooth-studio."""
    if os.environ.get("STUDIO_HOME"):
        return Path(os.environ["STUDIO_HOME"]).expanduser()
    if os.environ.get("SPACE_ID") and Path("/data").is_dir() and os.access("/data", os.W_OK):
        return Path("/data/dreambooth-studio")
    return Path.home() / ".dreambooth-studio"


def new_id(prefix: str = "") -> str:
    return f"{prefix}{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not ID_PATTERN.match(value):
        raise NotFound(f"no {what} {value!r}")
    return value


class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def cache_dir(self) -> Path:
        """Work shared by every user (class images, the untouched model's previews): it holds no user data."""
        return self.root / "cache"

    @property
    def class_image_cache(self) -> Path:
        return self.cache_dir / CLASS_IMAGES_CACHE

    def user_dir(self, user: str) -> Path:
        return safe_join(self.root, "users", check_id(user, "user"))

    def presets_dir(self, user: str) -> Path:
        return self.user_dir(user) / "presets"

    # -- datasets ----------------------------------------------------------------
    def new_dataset(self, user: str) -> tuple[str, Path]:
        dataset_id = new_id("d")
        path = safe_join(self.user_dir(user), "datasets", dataset_id)
        path.mkdir(parents=True)
        return dataset_id, path

    def dataset_ids(self, user: str) -> list[str]:
        """The user's photo sets, newest first."""
        return self._ids(self.user_dir(user) / "datasets")

    def dataset_dir(self, user: str, dataset_id: str) -> Path:
        path = safe_join(self.user_dir(user), "datasets", check_id(dataset_id, "photo set"))
        if not path.is_dir():
            raise NotFound(f"no photo set {dataset_id!r}")
        return path

    # -- runs --------------------------------------------------------------------
    def new_run(self, user: str) -> tuple[str, Path]:
        run_id = new_id("r")
        path = safe_join(self.user_dir(user), "runs", run_id)
        path.mkdir(parents=True)
        return run_id, path

    def run_dir(self, user: str, run_id: str) -> Path:
        path = safe_join(self.user_dir(user), "runs", check_id(run_id, "run"))
        if not path.is_dir():
            raise NotFound(f"no run {run_id!r}")
        return path

    def run_ids(self, user: str) -> list[str]:
        """The user's runs, newest first (ids start with their creation time)."""
        return self._ids(self.user_dir(user) / "runs")

    @staticmethod
    def _ids(folder: Path) -> list[str]:
        if not folder.is_dir():
            return []
        return sorted((p.name for p in folder.iterdir() if p.is_dir() and ID_PATTERN.match(p.name)), reverse=True)

    def delete_run(self, user: str, run_id: str) -> None:
        shutil.rmtree(self.run_dir(user, run_id))
