"""Generate tab: draw with the base model or a trained one; compare prompts x models x seeds in one grid.

The model lists refresh on their own (when the page opens, when the tab is opened, when a run starts, ends or
is deleted), and prompts follow the user's current subject until the user types their own.
"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio.inference.schedulers import SCHEDULERS
from studio.ui import views
from studio.ui.kit import Ctx, model_dropdown, on, refill_prompt, suggested_prompts, then


@dataclass
class GenerateTab:
    ctx: Ctx
    model: gr.Dropdown
    models: gr.Dropdown
    prompt: gr.Textbox
    compare_prompts: gr.Textbox
    auto: gr.State  # the prompts last filled in for the user: replaced only while still untouched

    @property
    def refresh_outputs(self) -> list:
        return [self.model, self.models, self.prompt, self.compare_prompts, self.auto]

    @property
    def refresh_inputs(self) -> list:
        return [self.ctx.browser, self.model, self.models, self.prompt, self.compare_prompts, self.auto,
                self.ctx.train_settings]

    def refresh(self, browser_id, model, models, prompt, compare_prompts, auto, subject, request: gr.Request):
        suggestions = suggested_prompts(self.ctx, self.ctx.user(browser_id, request), subject)
        auto = auto or {}
        new = {"prompt": suggestions[0] if suggestions else "", "compare": "\n".join(suggestions[:2])}
        return (model_dropdown(self.ctx, browser_id, request, model),
                model_dropdown(self.ctx, browser_id, request, models, multiselect=True),
                refill_prompt(prompt, auto.get("prompt", ""), new["prompt"]),
                refill_prompt(compare_prompts, auto.get("compare", ""), new["compare"]),
                {k: v or auto.get(k, "") for k, v in new.items()})

    def refresh_on(self, event, api_name: str | bool = False) -> None:
        on(event, self.refresh, self.refresh_inputs, self.refresh_outputs, api_name=api_name, show_progress="hidden")

    def on_load(self, loaded) -> None:
        then(loaded, self.refresh, self.refresh_inputs, self.refresh_outputs, api_name="generate_refresh_all",
             show_progress="hidden")
        self.refresh_on(self.ctx.runs_version.change)


def draw_settings(prompt_text, negative_text, sched, n_steps, cfg, seed_value, n=1):
    from studio.inference.generate import DrawSettings

    return DrawSettings(prompt_text or "", negative_text or "", int(n_steps), float(cfg), int(seed_value or 0), int(n), sched)


def build(ctx: Ctx) -> GenerateTab:
    studio = ctx.studio
    example = studio.base_models.example_prompt()
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=280):
            with gr.Row():
                model = gr.Dropdown([("base model", "base")], value="base", label="Model", scale=4, min_width=160,
                                    elem_id="gen-model")
                refresh = gr.Button("↻ Refresh", scale=1, min_width=90, elem_id="gen-refresh")
            prompt = gr.Textbox("", label="Prompt", lines=2, placeholder=example, elem_id="gen-prompt")
            negative = gr.Textbox("", label="Negative prompt")
            with gr.Row():
                scheduler = gr.Dropdown(list(SCHEDULERS), value="default", label="Scheduler", min_width=120,
                                        info="noisy pictures? try ddim, or ~100 steps")
                steps = gr.Slider(1, 100, 25, step=1, label="Steps", min_width=120)
            with gr.Row():
                guidance = gr.Slider(0, 20, 7.5, step=0.5, label="Guidance", min_width=120)
                seed = gr.Number(0, label="Seed", precision=0, minimum=0, min_width=80)
                count = gr.Slider(1, 8, 2, step=1, label="Images", min_width=120)
            go = gr.Button("Generate", variant="primary", elem_id="gen-go")
        with gr.Column(scale=1, min_width=280):
            gallery = gr.Gallery(label="Results", columns=2, height=420, object_fit="contain", format="png",
                                 elem_id="gen-gallery")  # PNG: what a user downloads is the picture drawn
            timing = gr.Markdown("")
    with gr.Accordion("Side by side: prompts x models x seeds", open=False):
        with gr.Row(equal_height=False):
            with gr.Column(min_width=280):
                prompts = gr.Textbox("", lines=3, label="Prompts (one per line)", placeholder=example,
                                     elem_id="compare-prompts")
                models = gr.Dropdown([("base model", "base")], value=["base"], multiselect=True, label="Models",
                                     elem_id="compare-models")
                seeds = gr.Textbox("0, 1", label="Seeds")
                compare_btn = gr.Button("Compare", elem_id="compare-go")
            grid = gr.Image(label="Grid", type="pil", interactive=False, format="png", elem_id="compare-grid")

    def generate(browser_id, model_id, prompt_text, negative_text, sched, n_steps, cfg, seed_value, n, request: gr.Request):
        settings = draw_settings(prompt_text, negative_text, sched, n_steps, cfg, seed_value, n)
        result = studio.generate(ctx.user(browser_id, request), model_id, settings)
        items = [(image, f"seed {s}") for image, s in zip(result.images, result.seeds)]
        return items, f"{len(items)} image(s) in {result.seconds:.1f} s"

    def compare(browser_id, model_ids, prompt_lines, seed_text, negative_text, sched, n_steps, cfg, request: gr.Request):
        prompt_list = views.parse_lines(prompt_lines)
        settings = draw_settings(prompt_list[0] if prompt_list else "", negative_text, sched, n_steps, cfg, 0)
        model_ids = model_ids if isinstance(model_ids, list) else [model_ids]
        result = studio.compare(ctx.user(browser_id, request), model_ids, prompt_list, settings, views.parse_seeds(seed_text))
        return result.grid, f"grid of {len(result.images)} image(s) in {result.seconds:.1f} s"

    tab = GenerateTab(ctx, model, models, prompt, prompts, gr.State({}))
    tab.refresh_on(refresh.click, "generate_refresh")
    on(go.click, generate, [ctx.browser, model, prompt, negative, scheduler, steps, guidance, seed, count], [gallery, timing],
       api_name="generate")
    on(compare_btn.click, compare, [ctx.browser, models, prompts, seeds, negative, scheduler, steps, guidance], [grid, timing],
       api_name="compare")
    return tab
