"""Inpaint tab: paint over part of a picture and redraw it with the prompt (and the trained subject)."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio.ui import views
from studio.ui.app import Ctx, friendly
from studio.ui.tab_generate import models_loader


@dataclass
class InpaintTab:
    ctx: Ctx
    model: gr.Dropdown

    def on_load(self, loaded) -> None:
        loaded.then(models_loader(self.ctx), [self.ctx.browser], [self.model],
                    api_name=False)


def build(ctx: Ctx) -> InpaintTab:
    studio = ctx.studio
    with gr.Row():
        with gr.Column(scale=1):
            editor = gr.ImageEditor(label="Picture: paint over what to replace", type="pil", height=420,
                                    brush=gr.Brush(colors=["#ffffff"], color_mode="fixed", default_size=24),
                                    elem_id="inpaint-editor")
            with gr.Accordion("Or upload a mask (white = replace)", open=False):
                mask_upload = gr.Image(label="Mask", type="pil", image_mode="L")
        with gr.Column(scale=1):
            with gr.Row():
                model = gr.Dropdown([("base model", "base")], value="base", label="Model", scale=4)
                refresh = gr.Button("↻", scale=1, min_width=40)
            prompt = gr.Textbox("a photo of sks dog", label="Prompt", lines=2, elem_id="inpaint-prompt")
            with gr.Row():
                strength = gr.Slider(0.05, 1.0, 0.85, step=0.05, label="Strength")
                steps = gr.Slider(1, 100, 25, step=1, label="Steps")
                seed = gr.Number(0, label="Seed", precision=0, minimum=0)
            go = gr.Button("Inpaint", variant="primary", elem_id="inpaint-go")
            with gr.Row():
                original = gr.Image(label="Original", type="pil", interactive=False, height=256, elem_id="inpaint-original")
                result = gr.Image(label="Result", type="pil", interactive=False, height=256, elem_id="inpaint-result")

    @friendly(2)
    def inpaint(browser_id, model_id, editor_value, mask_value, prompt_text, strength_value, n_steps, seed_value,
                request: gr.Request):
        from studio.inference.generate import DrawSettings

        image, mask = views.editor_image_and_mask(editor_value, mask_value)
        settings = DrawSettings(prompt_text or "", steps=int(n_steps), seed=int(seed_value or 0))
        drawn = studio.inpaint(ctx.user(browser_id, request), model_id, image, mask, settings, float(strength_value))
        return image, drawn.images[0]

    refresh.click(models_loader(ctx), [ctx.browser], [model], api_name="inpaint_models")
    go.click(inpaint, [ctx.browser, model, editor, mask_upload, prompt, strength, steps, seed], [original, result],
             api_name="inpaint")
    return InpaintTab(ctx, model)
