"""Runs tab: every run of this user, its settings, loss curve, previews, downloads; delete."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio.ui import views
from studio.ui.app import Ctx, friendly
from studio.ui.tab_train import preview_images


@dataclass
class RunsTab:
    ctx: Ctx
    table: gr.Dataframe
    picker: gr.Dropdown
    listing: object

    def on_load(self, loaded) -> None:
        loaded.then(self.listing, [self.ctx.browser], [self.table, self.picker], api_name=False)


def build(ctx: Ctx) -> RunsTab:
    studio = ctx.studio
    with gr.Row():
        table = gr.Dataframe(views.runs_frame([]), label="Your runs", interactive=False, scale=3, elem_id="runs-table")
        with gr.Column(scale=1):
            refresh = gr.Button("Refresh")
            picker = gr.Dropdown([], label="Run", elem_id="runs-picker")
            delete = gr.Button("Delete this run", variant="stop")
    with gr.Row():
        with gr.Column():
            settings_md = gr.Markdown()
        with gr.Column():
            plot = gr.LinePlot(None, x="step", y="loss", color="series", title="Loss (smoothed)", height=240)
            previews = gr.Gallery(label="Previews", columns=4, height=260, object_fit="contain")
            downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="runs-downloads")

    @friendly(2)
    def listing(browser_id, request: gr.Request):
        runs = studio.runs(ctx.user(browser_id, request))
        choices = [(f"{r['run_id']} · {r['status']}", r["run_id"]) for r in runs]
        return views.runs_frame(runs), gr.Dropdown(choices=choices, value=choices[0][1] if choices else None)

    @friendly(4)
    def show(browser_id, run_id, request: gr.Request):
        if not run_id:
            return "", None, [], None
        user = ctx.user(browser_id, request)
        config, (events, _) = studio.run_config(user, run_id), studio.events(user, run_id, 0)
        state = studio.run_state(user, run_id)
        files = [ctx.servable(path) for path in studio.outputs(user, run_id).values()]
        text = views.status_markdown(state, events) + "\n\n" + views.config_table(config.get("config", {}), config.get("sources", {}))
        return text, views.loss_frame(events) if any(e.kind == "step" for e in events) else None, preview_images(studio, user, run_id, events), files or None

    @friendly(2)
    def remove(browser_id, run_id, request: gr.Request):
        if not run_id:
            raise ValueError("pick a run first")
        studio.delete_run(ctx.user(browser_id, request), run_id)
        gr.Info(f"deleted {run_id}")
        return listing(browser_id, request)

    refresh.click(listing, [ctx.browser], [table, picker], api_name="runs_list").then(
        show, [ctx.browser, picker], [settings_md, plot, previews, downloads], api_name=False)
    picker.change(show, [ctx.browser, picker], [settings_md, plot, previews, downloads], api_name="runs_show")
    delete.click(remove, [ctx.browser, picker], [table, picker], api_name="runs_delete")
    return RunsTab(ctx, table, picker, listing)
