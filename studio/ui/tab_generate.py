"""Generate tab: draw with the base model or a trained one; compare prompts x models x seeds in one grid."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio.ui import views
from studio.ui.app import Ctx, friendly

# The engine's scheduler names (studio.inference.pipelines.SCHEDULERS; a test keeps them equal). Listed here so the
# page builds without importing torch.
SCHEDULERS = ("default", "ddim", "dpm++", "euler", "euler_a")


def model_choices(studio, user: str) -> list[tuple[str, str]]:
    return [(m.label, m.id) for m in studio.models(user)]


def last_trigger(studio, user: str) -> str:
    """The trigger phrase of the newest run that has a config ("" when none)."""
    for run in studio.runs(user):
        phrase = views.trigger_phrase(studio.run_config(user, run["run_id"]))
        if phrase:
            return phrase
    return ""


def refresh_models(ctx: Ctx, browser_id, request: gr.Request, multiselect: bool = False):
    choices = model_choices(ctx.studio, ctx.user(browser_id, request))
    newest = choices[1][1] if len(choices) > 1 else choices[0][1]
    value = [choices[0][1], newest] if multiselect and newest != choices[0][1] else ([newest] if multiselect else newest)
    return gr.Dropdown(choices=choices, value=value)


def on_tab_select(ctx: Ctx):
    """A handler (browser id, current model) -> the model dropdown with this user's models as they are now.

    A run finished on the Train tab is what the user comes here to try: the default "base" gives way to the newest
    model; a model the user picked stays picked while it exists."""

    @friendly()
    def select(browser_id, current, request: gr.Request):
        dropdown = refresh_models(ctx, browser_id, request)
        if current != "base" and current in [value for _, value in dropdown.choices]:
            return gr.Dropdown(choices=dropdown.choices, value=current)
        return dropdown

    return select


def models_loader(ctx: Ctx, multiselect: bool = False):
    """A handler (browser id, request) -> the model dropdown, refreshed."""

    @friendly()
    def load(browser_id, request: gr.Request):
        return refresh_models(ctx, browser_id, request, multiselect)

    return load


@dataclass
class GenerateTab:
    ctx: Ctx
    model: gr.Dropdown
    models: gr.Dropdown
    prompt: gr.Textbox
    compare_prompts: gr.Textbox

    def on_load(self, loaded) -> None:
        loaded.then(self.refresh, [self.ctx.browser], [self.model, self.models, self.prompt, self.compare_prompts],
                    api_name="generate_refresh_all")

    def refresh(self, browser_id, request: gr.Request):
        phrase = last_trigger(self.ctx.studio, self.ctx.user(browser_id, request))
        return (refresh_models(self.ctx, browser_id, request), refresh_models(self.ctx, browser_id, request, True),
                phrase or gr.skip(), (f"{phrase}\n{phrase} on the beach" if phrase else gr.skip()))


def build(ctx: Ctx) -> GenerateTab:
    studio = ctx.studio
    schedulers = list(SCHEDULERS)
    with gr.Row():
        with gr.Column(scale=1):
            with gr.Row():
                model = gr.Dropdown([("base model", "base")], value="base", label="Model", scale=4, elem_id="gen-model")
                refresh = gr.Button("↻", scale=1, min_width=40)
            prompt = gr.Textbox("a photo of sks dog", label="Prompt", lines=2, elem_id="gen-prompt")
            negative = gr.Textbox("", label="Negative prompt")
            with gr.Row():
                scheduler = gr.Dropdown(schedulers, value="default", label="Scheduler")
                steps = gr.Slider(1, 100, 25, step=1, label="Steps")
            with gr.Row():
                guidance = gr.Slider(0, 20, 7.5, step=0.5, label="Guidance")
                seed = gr.Number(0, label="Seed", precision=0, minimum=0)
                count = gr.Slider(1, 8, 2, step=1, label="Images")
            go = gr.Button("Generate", variant="primary", elem_id="gen-go")
        with gr.Column(scale=1):
            gallery = gr.Gallery(label="Results", columns=2, height=420, object_fit="contain", elem_id="gen-gallery")
            timing = gr.Markdown("")
    with gr.Accordion("Side by side: prompts x models x seeds", open=False):
        with gr.Row():
            with gr.Column():
                prompts = gr.Textbox("a photo of sks dog\na photo of sks dog on the beach", lines=3,
                                     label="Prompts (one per line)")
                models = gr.Dropdown([("base model", "base")], value=["base"], multiselect=True, label="Models")
                seeds = gr.Textbox("0, 1", label="Seeds")
                compare_btn = gr.Button("Compare", elem_id="compare-go")
            grid = gr.Image(label="Grid", type="pil", interactive=False, elem_id="compare-grid")

    def draw_settings(prompt_text, negative_text, sched, n_steps, cfg, seed_value, n=1):
        from studio.inference.generate import DrawSettings

        return DrawSettings(prompt_text or "", negative_text or "", int(n_steps), float(cfg), int(seed_value or 0),
                            int(n), sched)

    @friendly(2)
    def generate(browser_id, model_id, prompt_text, negative_text, sched, n_steps, cfg, seed_value, n, request: gr.Request):
        settings = draw_settings(prompt_text, negative_text, sched, n_steps, cfg, seed_value, n)
        result = studio.generate(ctx.user(browser_id, request), model_id, settings)
        items = [(image, f"seed {s}") for image, s in zip(result.images, result.seeds)]
        return items, f"{len(items)} image(s) in {result.seconds:.1f} s"

    @friendly(2)
    def compare(browser_id, model_ids, prompt_lines, seed_text, negative_text, sched, n_steps, cfg, request: gr.Request):
        prompt_list = views.parse_lines(prompt_lines)
        settings = draw_settings(prompt_list[0] if prompt_list else "", negative_text, sched, n_steps, cfg, 0)
        model_ids = model_ids if isinstance(model_ids, list) else [model_ids]
        result = studio.compare(ctx.user(browser_id, request), model_ids, prompt_list, settings, views.parse_seeds(seed_text))
        return result.grid, f"grid of {len(result.images)} image(s) in {result.seconds:.1f} s"

    tab = GenerateTab(ctx, model, models, prompt, prompts)
    refresh.click(tab.refresh, [ctx.browser], [model, models, prompt, prompts], api_name="generate_refresh")
    go.click(generate, [ctx.browser, model, prompt, negative, scheduler, steps, guidance, seed, count], [gallery, timing],
             api_name="generate")
    compare_btn.click(compare, [ctx.browser, models, prompts, seeds, negative, scheduler, steps, guidance], [grid, timing],
                      api_name="compare")
    return tab
