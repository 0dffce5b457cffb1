"""What every tab shares: the context (`Ctx`, every shared component declared), friendly errors, event binding,
and the loaders more than one tab uses. Tabs import this module and `views`, never each other or the shell.
"""
from __future__ import annotations

import functools
import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import gradio as gr
from PIL import Image

from studio.ui import views
from studio.workspace import LOCAL_USER


@dataclass
class Ctx:
    """The facade and the components that carry state between tabs (all created by the shell, before any tab)."""

    studio: Any
    browser: gr.BrowserState  # a random id per browser (shared mode): which workspace user this page is
    dataset: gr.State  # the current photo set's id (a reopened page gets the user's newest set back)
    photo_count: gr.State  # accepted photos in it (for derived settings)
    subject_type: gr.State  # "object" | "face" | "style", chosen on Curate, used by Train
    runs_version: gr.State  # bumped whenever a run starts, ends or is deleted: lists of runs and models refresh
    train_settings: gr.BrowserState  # the Train tab's last settings, kept in the browser: a reload gets them back
    max_upload_files: int = 30

    @property
    def shared(self) -> bool:
        return self.studio.shared

    def check_upload(self, files: Sequence[Any]) -> None:
        """A shared Space takes at most `max_upload_files` files per upload (a zip counts as one)."""
        if self.shared and len(files) > self.max_upload_files:
            raise ValueError(f"at most {self.max_upload_files} files per upload here; zip them or send fewer")

    def user(self, browser_id: Any, request: gr.Request | None) -> str:
        if not self.shared:
            return LOCAL_USER
        username = getattr(request, "username", None) if request is not None else None
        if username:
            clean = views.sanitise_user(username)
            if clean:
                return clean
            return "u" + hashlib.sha256(str(username).encode()).hexdigest()[:20]
        token = browser_id if isinstance(browser_id, str) and browser_id else getattr(request, "session_hash", None)
        if not token:
            raise gr.Error("this page has no session; reload it")
        return "u" + hashlib.sha256(str(token).encode()).hexdigest()[:20]


def servable(path: Path, name: str | None = None) -> str:
    """A copy of a user's file in a fresh temp folder: gradio may serve it, and no workspace path leaks."""
    folder = Path(tempfile.mkdtemp(prefix="studio-dl-"))
    target = folder / (name or path.name)
    shutil.copyfile(path, target)
    return str(target)


def _is_api_call(args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    """gradio_client marks its requests; a page's are not."""
    for value in [*args, *kwargs.values()]:
        if isinstance(value, gr.Request):
            headers = getattr(value, "headers", None) or {}
            return headers.get("x-gradio-user") == "api"
    return False


def friendly(fn: Callable, outputs: int) -> Callable:
    """Engine errors (ValueError, NotFound, QueueError...) as the engine's message, without a traceback or crash.

    On a page the message is a warning toast and every one of the `outputs` components is left exactly as it was
    (raising would mark them all with an "Error" badge that outlives the message). An API client gets the error."""

    @functools.wraps(fn)
    def inner(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
            message = message or type(exc).__name__
            if _is_api_call(args, kwargs):
                raise gr.Error(message, title="Can't do that", print_exception=False) from exc
            gr.Warning(message, title="Can't do that")
            return skips(outputs) if outputs != 1 else gr.skip()
    return inner


def _count(outputs: Any) -> int:
    return len(outputs) if isinstance(outputs, (list, tuple, set)) else (0 if outputs is None else 1)


def on(triggers, fn: Callable, inputs: Any = None, outputs: Any = None, **kwargs):
    """`gr.on` with friendly errors: the number of outputs to leave alone is read off `outputs`, never counted by hand."""
    return gr.on(triggers if isinstance(triggers, list) else [triggers], friendly(fn, _count(outputs)), inputs, outputs,
                 **kwargs)


def then(dependency, fn: Callable, inputs: Any = None, outputs: Any = None, **kwargs):
    """`dependency.then(...)` with friendly errors, as `on`."""
    return dependency.then(friendly(fn, _count(outputs)), inputs, outputs, **kwargs)


def skips(n: int) -> tuple:
    return tuple(gr.skip() for _ in range(n))


def model_dropdown(ctx: Ctx, browser_id, request: gr.Request, current: Any = None, *, multiselect: bool = False):
    """The user's models as they are now. A run finished since is what the user comes to try: the newest model
    replaces "base"; a model the user picked stays picked while it exists."""
    choices = [(m.label, m.id) for m in ctx.studio.models(ctx.user(browser_id, request))]
    ids = [value for _, value in choices]
    newest = ids[1] if len(ids) > 1 else ids[0]
    if multiselect:
        kept = [v for v in (current or []) if v in ids]
        value = kept if kept and kept != ["base"] else list(dict.fromkeys(["base", newest]))
    else:
        value = current if current in ids and current != "base" else newest
    return gr.Dropdown(choices=choices, value=value)


def preview_images(studio, user: str, run_id: str, events) -> list[tuple[Image.Image, str]]:
    """A run's preview pictures (newest first) with their captions, read from the run folder."""
    items = []
    for relative, caption in views.preview_items(events):
        try:
            with Image.open(studio.run_file(user, run_id, relative)) as image:
                items.append((image.convert("RGB"), caption))
        except (KeyError, OSError):
            continue
    return items


def suggested_prompts(ctx: Ctx, user: str, train_settings: Any) -> list[str]:
    """Prompts for the user's current subject: the newest run's, else the identifier and class noun on the Train tab."""
    subject = train_settings if isinstance(train_settings, dict) else {}
    return ctx.studio.prompt_suggestions(user, str(subject.get("identifier") or ""), str(subject.get("class_noun") or ""))


def refill_prompt(current: str, last_auto: str, suggestion: str) -> str | dict:
    """A prompt box takes the new suggestion only while it still holds the previous one (or nothing): what the
    user typed is never replaced."""
    if not suggestion or (current or "").strip() not in ("", (last_auto or "").strip()):
        return gr.skip()
    return suggestion
