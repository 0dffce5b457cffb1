"""Inpaint tab: paint over part of a picture and redraw it with the prompt (and the trained subject).

The result keeps the picture's size: the engine repaints a square around the mask at the model's resolution and
pastes it back, so everything outside the mask stays as it was.
"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio.ui import views
from studio.ui.kit import Ctx, model_dropdown, on, refill_prompt, suggested_prompts, then


@dataclass
class InpaintTab:
    ctx: Ctx
    model: gr.Dropdown
    prompt: gr.Textbox
    auto: gr.State  # the prompt last filled in for the user

    def refresh(self, browser_id, model, prompt, auto, subject, request: gr.Request):
        suggestions = suggested_prompts(self.ctx, self.ctx.user(browser_id, request), subject)
        suggestion = suggestions[0] if suggestions else ""
        return (model_dropdown(self.ctx, browser_id, request, model), refill_prompt(prompt, auto or "", suggestion),
                suggestion or auto or "")

    def refresh_on(self, event, api_name: str | bool = False) -> None:
        on(event, self.refresh, self.refresh_inputs, [self.model, self.prompt, self.auto], api_name=api_name,
           show_progress="hidden")

    @property
    def refresh_inputs(self) -> list:
        return [self.ctx.browser, self.model, self.prompt, self.auto, self.ctx.train_settings]

    def on_load(self, loaded) -> None:
        then(loaded, self.refresh, self.refresh_inputs, [self.model, self.prompt, self.auto], api_name=False,
             show_progress="hidden")
        self.refresh_on(self.ctx.runs_version.change)


def build(ctx: Ctx) -> InpaintTab:
    studio = ctx.studio
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=280):
            editor = gr.ImageEditor(label="Picture: paint over what to replace", type="pil", height=420,
                                    brush=gr.Brush(colors=["#ffffff"], color_mode="fixed", default_size=24),
                                    elem_id="inpaint-editor")
            with gr.Accordion("Or upload a mask (white = replace)", open=False):
                mask_upload = gr.Image(label="Mask", type="pil", image_mode="L")
        with gr.Column(scale=1, min_width=280):
            with gr.Row():
                model = gr.Dropdown([("base model", "base")], value="base", label="Model", scale=4, min_width=160,
                                    elem_id="inpaint-model")
                refresh = gr.Button("↻ Refresh", scale=1, min_width=90, elem_id="inpaint-refresh")
            prompt = gr.Textbox("", label="Prompt", lines=2, elem_id="inpaint-prompt",
                                placeholder=studio.base_models.example_prompt())
            with gr.Row():
                strength = gr.Slider(0.05, 1.0, 0.85, step=0.05, label="Strength", min_width=120)
                steps = gr.Slider(1, 100, 25, step=1, label="Steps", min_width=120)
                seed = gr.Number(0, label="Seed", precision=0, minimum=0, min_width=80)
            go = gr.Button("Inpaint", variant="primary", elem_id="inpaint-go")
            # the result has the original's size: the same box (the editor's height) shows both at the same scale, as
            # gradio only ever scales a picture down to fit; PNG, not gradio's default WebP, keeps every pixel outside
            # the mask exactly as it was
            with gr.Row():
                original = gr.Image(label="Original", type="pil", interactive=False, height=420, format="png",
                                    elem_id="inpaint-original")
                result = gr.Image(label="Result", type="pil", interactive=False, height=420, format="png",
                                  elem_id="inpaint-result")

    def inpaint(browser_id, model_id, editor_value, mask_value, prompt_text, strength_value, n_steps, seed_value,
                request: gr.Request):
        from studio.inference.generate import DrawSettings

        image, mask = views.editor_image_and_mask(editor_value, mask_value)
        settings = DrawSettings(prompt_text or "", steps=int(n_steps), seed=int(seed_value or 0))
        drawn = studio.inpaint(ctx.user(browser_id, request), model_id, image, mask, settings, float(strength_value))
        return image, drawn.images[0]

    tab = InpaintTab(ctx, model, prompt, gr.State(""))
    tab.refresh_on(refresh.click, "inpaint_models")
    on(go.click, inpaint, [ctx.browser, model, editor, mask_upload, prompt, strength, steps, seed], [original, result],
       api_name="inpaint")
    return tab
