"""The Gradio app: five tabs over one `Studio`, with per-browser identity in shared mode.

Every handler takes the browser's id (a `gr.BrowserState`) first and the
`gr.Request` last; `Ctx.user` turns them into the workspace user, so only
server-side ids ever reach the engine. Errors from the engine become a
warning toast, never a crash, and the inputs stay as the user left them.
"""
from __future__ import annotations

import functools
import hashlib
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from studio.ui import views

CSS_FILE = Path(__file__).with_name("theme.css")
LOCAL_USER = "local"


@dataclass
class Ctx:
    """What every tab needs: the facade, the mode, and the components shared between tabs."""

    studio: Any
    shared: bool
    browser: gr.BrowserState
    dataset: gr.State  # the current photo set id
    photo_count: gr.State  # accepted photos in it (for derived settings)
    max_upload_files: int = 30

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

    def servable(self, path: Path) -> str:
        """A copy of a user's file in a fresh temp folder: gradio may serve it, and no workspace path leaks."""
        folder = Path(tempfile.mkdtemp(prefix="studio-dl-"))
        target = folder / path.name
        shutil.copyfile(path, target)
        return str(target)


def friendly(outputs: int = 1) -> Callable:
    """Turn engine errors (ValueError, NotFound, QueueError...) into an error toast with the engine's message:
    no traceback, no crash, and no output (so nothing the user entered is touched). `outputs` is kept for
    handlers that prefer to skip silently."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except gr.Error:
                raise
            except (ValueError, KeyError, RuntimeError, OSError) as exc:
                message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
                raise gr.Error(message or type(exc).__name__, title="Can't do that", print_exception=False) from exc
        return inner

    return wrap


def skips(n: int) -> tuple:
    return tuple(gr.skip() for _ in range(n))


def new_browser_id(browser_id: Any) -> str:
    """A random id for a new browser, kept in its localStorage so a refresh finds the same runs."""
    if isinstance(browser_id, str) and len(browser_id) >= 16:
        return browser_id
    return secrets.token_hex(16)


def build_app(studio, *, shared: bool = False) -> gr.Blocks:
    from studio.ui import tab_curate, tab_generate, tab_inpaint, tab_runs, tab_train

    with gr.Blocks(title="DreamBooth Studio") as demo:
        ctx = Ctx(studio, shared, gr.BrowserState("", storage_key="dreambooth-studio-id"), gr.State(None), gr.State(0))
        gr.Markdown("# DreamBooth Studio\nTeach Stable Diffusion your subject from a few photos, then draw it anywhere.",
                    elem_id="studio-header")
        with gr.Tabs():
            with gr.Tab("1 · Curate", id="curate"):
                demo_button = tab_curate.build(ctx)
            with gr.Tab("2 · Train", id="train"):
                train = tab_train.build(ctx)
            with gr.Tab("3 · Generate", id="generate") as generate_tab:
                generate = tab_generate.build(ctx)
            with gr.Tab("4 · Inpaint", id="inpaint") as inpaint_tab:
                inpaint = tab_inpaint.build(ctx)
            with gr.Tab("5 · Runs", id="runs"):
                runs = tab_runs.build(ctx)
        demo_button.click(train.fill_demo, None, train.demo_outputs, api_name=False)
        for opened, dropdown in ((generate_tab, generate.model), (inpaint_tab, inpaint.model)):
            opened.select(tab_generate.on_tab_select(ctx), [ctx.browser, dropdown], [dropdown], api_name=False,
                          show_progress="hidden")
        loaded = demo.load(new_browser_id, [ctx.browser], [ctx.browser], api_name="hello", show_progress="hidden")
        for tab in (train, generate, inpaint, runs):
            tab.on_load(loaded)  # after the browser id is known, so a refresh re-attaches to the same user's run
    return demo


def serve(demo: gr.Blocks, shared: bool, **launch_kwargs: Any) -> None:
    """Queue and launch the app the way `python app.py` does (one call at a time per handler, the UI's css and
    upload limits). The tests, benchmarks and screenshot tool serve it through here too, so they see that page."""
    demo.queue(default_concurrency_limit=1).launch(**launch_options(shared), **launch_kwargs)


def launch_options(shared: bool) -> dict[str, Any]:
    """The keyword arguments for `demo.launch` that the UI itself needs (css, upload limits)."""
    options: dict[str, Any] = {"css": CSS_FILE.read_text(encoding="utf-8") if CSS_FILE.exists() else None}
    if shared:
        options["max_file_size"] = "20mb"
    return options
