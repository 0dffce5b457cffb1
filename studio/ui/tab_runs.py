"""Runs tab: every run of this user, its settings, loss curve, previews and labelled downloads; rename; delete
after a confirmation that names the run. The list refreshes itself when a run starts, ends or is deleted."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio.ui import views
from studio.ui.kit import Ctx, on, preview_images, servable, then


@dataclass
class RunsTab:
    ctx: Ctx
    table: gr.Dataframe
    picker: gr.Dropdown
    details: list  # what `show` fills in for the picked run

    @property
    def studio(self):
        return self.ctx.studio

    def listing(self, browser_id, current, request: gr.Request):
        """The runs as they are now; the picked run stays picked while it exists (never another one)."""
        runs = self.studio.runs(self.ctx.user(browser_id, request))
        choices = [(views.run_label(r), r.run_id) for r in runs]
        ids = [r.run_id for r in runs]
        value = current if current in ids else (ids[0] if ids and current is None else None)
        return views.runs_frame(runs), gr.Dropdown(choices=choices, value=value)

    def show(self, browser_id, run_id, request: gr.Request):
        if not run_id:
            return "", None, [], None, "", "", gr.Dropdown(choices=[], value=None)
        user = self.ctx.user(browser_id, request)
        config, (events, _) = self.studio.run_config(user, run_id), self.studio.events(user, run_id, 0)
        meta, state = self.studio.run_meta(user, run_id), self.studio.run_state(user, run_id)
        downloads = self.studio.downloads(user, run_id)
        text = "\n\n".join(part for part in (
            views.status_markdown(state, events, meta.name), views.scorecard_markdown(events),
            views.config_table(config.get("config", {}), config.get("sources", {}), None,
                               self.studio.base_models.native_resolution())) if part)
        keep = gr.Dropdown(choices=views.checkpoint_choices(events, self.studio.checkpoint_steps(user, run_id)), value=None)
        plot = views.loss_frame(events) if any(e.kind == "step" for e in events) else None
        files = [servable(d.path) for d in downloads]
        return (text, plot, preview_images(self.studio, user, run_id, events), files or None,
                views.downloads_markdown(downloads), meta.name, keep)

    def refresh_on(self, event, api_name: str | bool = False) -> None:
        self.show_after(on(event, self.listing, [self.ctx.browser, self.picker], [self.table, self.picker],
                           api_name=api_name, show_progress="hidden"))

    def show_after(self, listed) -> None:
        """The picked run's details again after a new list (its status may have changed while it stayed picked)."""
        then(listed, self.show, [self.ctx.browser, self.picker], self.details, api_name=False, show_progress="hidden")

    def on_load(self, loaded) -> None:
        self.show_after(then(loaded, self.listing, [self.ctx.browser, self.picker], [self.table, self.picker],
                             api_name=False, show_progress="hidden"))
        self.refresh_on(self.ctx.runs_version.change)


def build(ctx: Ctx) -> RunsTab:
    studio = ctx.studio
    with gr.Row(equal_height=False):
        table = gr.Dataframe(views.runs_frame([]), label="Your runs", interactive=False, scale=3, elem_id="runs-table")
        with gr.Column(scale=1, min_width=260):
            refresh = gr.Button("↻ Refresh list", elem_id="runs-refresh")
            picker = gr.Dropdown([], value=None, label="Run", elem_id="runs-picker")
            with gr.Row():
                name = gr.Textbox("", label="Name", scale=3, min_width=140, elem_id="runs-name")
                rename = gr.Button("Rename", scale=1, min_width=80, elem_id="runs-rename")
            delete = gr.Button("Delete this run…", variant="stop", elem_id="runs-delete")
            with gr.Group(visible=False, elem_id="runs-confirm") as confirm:
                question = gr.Markdown("", elem_id="runs-confirm-question")
                with gr.Row():
                    yes = gr.Button("Yes, delete it", variant="stop", elem_id="runs-delete-yes", min_width=100)
                    no = gr.Button("Keep it", elem_id="runs-delete-no", min_width=80)
    with gr.Row(equal_height=False):
        with gr.Column(min_width=280):
            settings_md = gr.Markdown(elem_id="runs-settings")
        with gr.Column(min_width=280):
            plot = gr.LinePlot(None, x="step", y="loss", color="series", title="Loss (smoothed)", height=240)
            previews = gr.Gallery(label="Previews", columns=4, height="auto", object_fit="contain")
            with gr.Row():
                keep = gr.Dropdown([], value=None, label="Use as the run's output", scale=3, min_width=160,
                                   info="the studio keeps the checkpoint its scorecard picks; choose another here",
                                   elem_id="runs-keep")
                use = gr.Button("Use it", scale=1, min_width=80, elem_id="runs-use")
            files_md = gr.Markdown("", elem_id="runs-downloads-help")
            downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="runs-downloads")
            methods = gr.Button("Compare methods for this subject", elem_id="runs-compare-methods")
            methods_grid = gr.Image(None, label="The base model and each method's run of this subject (finished runs "
                                    "with the same identifier and class), on its prompt, a new place and its class",
                                    type="pil", interactive=False, elem_id="runs-methods-grid")
    details = [settings_md, plot, previews, downloads, files_md, name, keep]
    tab = RunsTab(ctx, table, picker, details)

    def ask(browser_id, run_id, request: gr.Request):
        if not run_id:
            raise ValueError("pick a run first")
        meta = studio.run_meta(ctx.user(browser_id, request), run_id)
        return gr.Group(visible=True), f"Delete **{meta.name or run_id}** (`{run_id}`) with all its checkpoints and files?"

    def remove(browser_id, run_id, version, request: gr.Request):
        if not run_id:
            raise ValueError("pick a run first")
        studio.delete_run(ctx.user(browser_id, request), run_id)
        gr.Info(f"deleted {run_id}")
        return (*tab.listing(browser_id, None, request)[:1], gr.Dropdown(value=None), gr.Group(visible=False),
                (version or 0) + 1)

    def renamed(browser_id, run_id, text, version, request: gr.Request):
        if not run_id:
            raise ValueError("pick a run first")
        kept = studio.rename_run(ctx.user(browser_id, request), run_id, text)
        gr.Info(f"renamed to {kept}")
        return (version or 0) + 1

    def use_output(browser_id, run_id, choice, request: gr.Request):
        if not run_id or not choice:
            raise ValueError("pick a run and the checkpoint to use first")
        studio.use_checkpoint(ctx.user(browser_id, request), run_id, None if choice == "last" else int(choice))
        gr.Info("the last step's files are the output" if choice == "last" else f"step {choice}'s files are the output")
        return tab.show(browser_id, run_id, request)

    def compare_methods(browser_id, run_id, request: gr.Request):
        from studio.inference.generate import DrawSettings

        if not run_id:
            raise ValueError("pick a finished run first")
        result = studio.compare_methods(ctx.user(browser_id, request), run_id, DrawSettings("x", steps=25))
        gr.Info(f"{len(result.images)} pictures in {result.seconds:.0f} s; train the same subject with another "
                "method to add a column")
        return result.grid

    tab.refresh_on(refresh.click, "runs_list")
    on(methods.click, compare_methods, [ctx.browser, picker], methods_grid, api_name="runs_compare_methods")
    on(use.click, use_output, [ctx.browser, picker, keep], details, api_name="runs_use_checkpoint")
    on(picker.input, tab.show, [ctx.browser, picker], details, api_name="runs_show")
    on(delete.click, ask, [ctx.browser, picker], [confirm, question], api_name="runs_ask_delete")
    on(no.click, lambda: gr.Group(visible=False), None, confirm, api_name=False)
    on(yes.click, remove, [ctx.browser, picker, ctx.runs_version], [table, picker, confirm, ctx.runs_version],
       api_name="runs_delete")
    on(rename.click, renamed, [ctx.browser, picker, name, ctx.runs_version], ctx.runs_version, api_name="runs_rename")
    return tab
