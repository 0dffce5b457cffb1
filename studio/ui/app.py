"""The Gradio app's shell: five tabs over one `Studio`, with per-browser identity in shared mode.

Every handler takes the browser's id (a `gr.BrowserState`) first and the
`gr.Request` last; `Ctx.user` turns them into the workspace user, so only
server-side ids ever reach the engine. The shell creates the shared state,
builds the tabs and wires what crosses tabs; each tab lives in its own module.
"""
from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import gradio as gr

from studio.ui import tab_curate, tab_generate, tab_inpaint, tab_runs, tab_train
from studio.ui.kit import Ctx

CSS_FILE = Path(__file__).with_name("theme.css")


def new_browser_id(browser_id: Any) -> str:
    """A random id for a new browser, kept in its localStorage so a refresh finds the same runs."""
    if isinstance(browser_id, str) and len(browser_id) >= 16:
        return browser_id
    return secrets.token_hex(16)


def build_app(studio) -> gr.Blocks:
    with gr.Blocks(title="DreamBooth Studio") as demo:
        # Browser states live here, outside the tabs: a tab's contents mount only when it is first opened, and a
        # browser state reads its stored value when it mounts.
        ctx = Ctx(studio, gr.BrowserState("", storage_key="dreambooth-studio-id"), gr.State(None), gr.State(0),
                  gr.State("object"), gr.State(0), gr.BrowserState({}, storage_key="dreambooth-studio-train"))
        gr.Markdown("# DreamBooth Studio\nTeach Stable Diffusion your subject from a few photos, then draw it anywhere.",
                    elem_id="studio-header")
        with gr.Tabs(elem_id="studio-tabs"):
            with gr.Tab("1 · Curate", id="curate"):
                curate = tab_curate.build(ctx)
            with gr.Tab("2 · Train", id="train"):
                train = tab_train.build(ctx)
            with gr.Tab("3 · Generate", id="generate") as generate_tab:
                generate = tab_generate.build(ctx)
            with gr.Tab("4 · Inpaint", id="inpaint") as inpaint_tab:
                inpaint = tab_inpaint.build(ctx)
            with gr.Tab("5 · Runs", id="runs") as runs_tab:
                runs = tab_runs.build(ctx)
        curate.demo_button.click(train.fill_demo, [ctx.browser], train.demo_outputs, api_name=False)
        generate.refresh_on(generate_tab.select, "generate_tab")
        inpaint.refresh_on(inpaint_tab.select, "inpaint_tab")
        runs.refresh_on(runs_tab.select, "runs_tab")
        loaded = demo.load(new_browser_id, [ctx.browser], [ctx.browser], api_name="hello", show_progress="hidden")
        for tab in (curate, train, generate, inpaint, runs):
            tab.on_load(loaded)  # after the browser id is known, so a refresh re-attaches to the same user's things
    return demo


def serve(studio, **launch_kwargs: Any) -> gr.Blocks:
    """Build the app over `studio`, queue it and launch it the way `python app.py` does (one call at a time per
    handler, the UI's css and upload limits, shared mode read off the studio itself). The tests, benchmarks and
    screenshot tool serve it through here too, so they see that page."""
    demo = build_app(studio)
    demo.queue(default_concurrency_limit=1).launch(**launch_options(studio.shared), **launch_kwargs)
    return demo


def launch_options(shared: bool) -> dict[str, Any]:
    """The keyword arguments for `demo.launch` that the UI itself needs (css, upload limits)."""
    options: dict[str, Any] = {"css": CSS_FILE.read_text(encoding="utf-8") if CSS_FILE.exists() else None}
    if shared:
        options["max_file_size"] = "20mb"
    return options
