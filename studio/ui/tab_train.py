"""Train tab: pick a preset by subject and method, tune it, start a run and watch it live.

Only the run id and an event cursor live in the session state; a 1 s timer asks
the engine for events since the cursor and redraws only what changed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image

from studio.ui import views
from studio.ui.app import Ctx, friendly, skips

# The order of the settings inputs of /train_start and /train_explain (after browser id, photo set, photo count).
SETTING_NAMES = ("subject_type", "method", "identifier", "class_noun", *views.ADVANCED_FIELDS, "extra")
METHODS = ["LoRA", "Full fine-tune"]
TABLE_FIELDS = ("identifier", "class_noun", "method", *views.ADVANCED_FIELDS[:12], "preview_every", "checkpoint_every")


@dataclass
class TrainTab:
    ctx: Ctx
    run: gr.State
    timer: gr.Timer
    outputs: list
    demo_outputs: list  # method, identifier, class noun, the Advanced controls, extra settings

    def fill_demo(self):
        """The demo subject's identifier, class and preset values, so one more click starts a run that works."""
        _, presets, overrides = self.ctx.studio.demo_settings()
        resolved = self.ctx.studio.resolve(presets, overrides, num_images=5)
        prompts = ", ".join(f'"{p}"' for p in overrides.get("preview_prompts", []))
        extra = f"preview_prompts = [{prompts}]" if prompts else ""
        method = METHODS[1] if resolved.config.method == "full" else METHODS[0]
        return (method, overrides["identifier"], overrides["class_noun"],
                *views.advanced_values(resolved.config.to_dict(), {}), extra)

    def on_load(self, loaded) -> None:
        loaded.then(self.attach, [self.ctx.browser], [self.run, self.timer], api_name="train_attach")

    def attach(self, browser_id, request: gr.Request):
        """Re-attach a reopened page to this user's queued or running run."""
        run_id = self.ctx.studio.active_run(self.ctx.user(browser_id, request))
        if run_id is None:
            return gr.skip(), gr.skip()
        return {"run_id": run_id, "cursor": 0}, gr.Timer(active=True)


def settings(studio, user: str, values: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Component values -> (presets, overrides): only what differs from the preset counts as 'set by you'."""
    name, forced = views.preset_name(values["subject_type"], values["method"], studio.presets(user))
    base = studio.resolve([name], {**forced, "class_noun": "subject"}, num_images=1, user=user).config.to_dict()
    advanced = {k: values[k] for k in views.ADVANCED_FIELDS}
    overrides = {**forced, "identifier": (values["identifier"] or "").strip()}
    if (values["class_noun"] or "").strip() and values["class_noun"].strip() != base["class_noun"]:
        overrides["class_noun"] = values["class_noun"].strip()
    overrides.update(views.changed_overrides(advanced, base))
    overrides.update(views.parse_extra_settings(values["extra"]))
    return [name], overrides


def preview_images(studio, user: str, run_id: str, events) -> list[tuple[Image.Image, str]]:
    items = []
    for relative, caption in views.preview_items(events):
        try:
            with Image.open(studio.run_file(user, run_id, relative)) as image:
                items.append((image.convert("RGB"), caption))
        except (KeyError, OSError):
            continue
    return items


def build(ctx: Ctx) -> TrainTab:
    studio = ctx.studio
    with gr.Row():
        with gr.Column(scale=1):
            subject = gr.Radio(["object", "face", "style"], value="object", label="Subject type")
            method = gr.Radio(METHODS, value="LoRA", label="Method",
                              info="LoRA: small file, little memory. Full: best likeness, needs a big GPU.")
            with gr.Row():
                identifier = gr.Textbox("sks", label="Identifier (rare word)", elem_id="identifier")
                class_noun = gr.Textbox("", label="Class noun", placeholder="dog, person, toy...", elem_id="class-noun")
            id_report = gr.Markdown("", elem_id="identifier-report")
            with gr.Accordion("Advanced", open=False):
                adv = {
                    "max_steps": gr.Number(label="Steps (0 = auto from photos)", precision=0, minimum=0),
                    "learning_rate": gr.Number(label="Learning rate", minimum=0),
                    "batch_size": gr.Number(label="Batch size", precision=0, minimum=1),
                    "lora_rank": gr.Number(label="LoRA rank", precision=0, minimum=1),
                    "with_prior_preservation": gr.Checkbox(label="Prior preservation"),
                    "num_class_images": gr.Number(label="Class images", precision=0, minimum=1),
                    "prior_loss_weight": gr.Number(label="Prior loss weight", minimum=0),
                    "snr_gamma": gr.Number(label="Min-SNR gamma (0 = off)", minimum=0),
                    "offset_noise": gr.Number(label="Offset noise", minimum=0),
                    "resolution": gr.Number(label="Resolution (0 = model's)", precision=0, minimum=0),
                    "mixed_precision": gr.Dropdown(["auto", "no", "fp16", "bf16"], label="Mixed precision"),
                    "gradient_checkpointing": gr.Checkbox(label="Gradient checkpointing (less memory, slower)"),
                    "preview_every": gr.Number(label="Preview every N steps (0 = 4 per run)", precision=0, minimum=0),
                    "checkpoint_every": gr.Number(label="Checkpoint every N steps (0 = end only)", precision=0, minimum=0),
                    "seed": gr.Number(label="Seed", precision=0, minimum=0),
                }
                extra = gr.Textbox(label="Extra settings (TOML `key = value` lines)", lines=2,
                                   placeholder="preview_seeds = [0, 1]\nclass_image_steps = 20")
            config_md = gr.Markdown(elem_id="resolved-config")
        with gr.Column(scale=2):
            with gr.Row():
                start = gr.Button("Start", variant="primary", elem_id="train-start")
                pause = gr.Button("Pause")
                resume = gr.Button("Resume")
                stop = gr.Button("Stop", variant="stop")
                sample = gr.Button("Sample now")
            status = gr.Markdown(views.status_markdown(None, []), elem_id="train-status")
            with gr.Row():
                progress = gr.Textbox(label="Progress", interactive=False, elem_id="train-progress")
                class_progress = gr.Textbox(label="Class-image progress", interactive=False)
            plot = gr.LinePlot(None, x="step", y="loss", color="series", title="Loss (smoothed)",
                               height=260, elem_id="loss-plot")
            previews = gr.Gallery(label="Previews (class prompt shows drift)", columns=4, height=300,
                                  object_fit="contain", elem_id="preview-gallery")
    first = studio.resolve(["object-lora"], {"class_noun": "subject"}, num_images=1)
    for component, value in zip(adv.values(), views.advanced_values(first.config.to_dict(), first.sources)):
        component.value = value
    run = gr.State(None)
    timer = gr.Timer(1.0, active=False)
    setting_inputs = [subject, method, identifier, class_noun, *adv.values(), extra]

    def values_of(args) -> dict[str, Any]:
        return dict(zip(SETTING_NAMES, args))

    @friendly()
    def explain(request: gr.Request, browser_id, count, *args):
        values = values_of(args)
        user = ctx.user(browser_id, request)
        presets, overrides = settings(studio, user, values)
        if not overrides.get("class_noun") and values["subject_type"] != "style" and not values["class_noun"]:
            overrides["class_noun"] = "(class noun)"
        resolved = studio.resolve(presets, overrides, num_images=int(count or 0), user=user)
        return f"**Preset `{presets[0]}`**\n\n" + views.config_table(resolved.config.to_dict(), resolved.sources, TABLE_FIELDS)

    @friendly(len(adv) + 1)
    def fill(browser_id, subject_type, method_name, noun, request: gr.Request):
        user = ctx.user(browser_id, request)
        name, forced = views.preset_name(subject_type, method_name, studio.presets(user))
        resolved = studio.resolve([name], {**forced, "class_noun": noun or "subject"}, num_images=1, user=user)
        preset_noun = studio.presets(user)[name].values.get("class_noun")
        return (*views.advanced_values(resolved.config.to_dict(), resolved.sources), preset_noun or gr.skip())

    @friendly()
    def check(identifier_text, noun):
        if not (identifier_text or "").strip():
            return "❌ the identifier is empty; pick a rare word such as `sks`"
        return views.identifier_markdown(studio.check_identifier(identifier_text.strip(), (noun or "thing").strip()))

    @friendly(4)
    def start_run(request: gr.Request, browser_id, dataset_id, count, *args):
        if not dataset_id:
            raise ValueError("no photos yet: upload some in the Curate tab first")
        user = ctx.user(browser_id, request)
        presets, overrides = settings(studio, user, values_of(args))
        run_id = studio.start_training(user, dataset_id, presets, overrides)
        gr.Info(f"run {run_id} queued")
        return {"run_id": run_id, "cursor": 0}, gr.Timer(active=True), [], None

    def poll(browser_id, current, request: gr.Request):
        if not current or not current.get("run_id"):
            return gr.skip(), gr.Timer(active=False), *skips(5)
        user, run_id = ctx.user(browser_id, request), current["run_id"]
        try:
            new, cursor = studio.events(user, run_id, current["cursor"])
        except KeyError:  # the run was deleted (or never was this user's): stop polling
            return None, gr.Timer(active=False), views.status_markdown(None, []), *skips(4)
        state = studio.run_state(user, run_id)
        events, _ = studio.events(user, run_id, 0) if new or state.status == "queued" else ([], 0)
        done = views.is_terminal(state.status) and not new
        has = {e.kind for e in new}
        return ({"run_id": run_id, "cursor": cursor}, gr.Timer(active=not done),
                views.status_markdown(state, events) if new or current["cursor"] == 0 or state.status == "queued" else gr.skip(),
                views.progress_text(events) if new else gr.skip(),
                views.class_images_text(events) if "class_images" in has else gr.skip(),
                views.loss_frame(events) if "step" in has else gr.skip(),
                preview_images(studio, user, run_id, events) if "preview" in has else gr.skip())

    def control(action: str, verb: str):
        @friendly()
        def handler(browser_id, current, request: gr.Request):
            if not current or not current.get("run_id"):
                raise ValueError("no run to control; press Start first")
            getattr(studio, action)(ctx.user(browser_id, request), current["run_id"])
            gr.Info(verb)
            return f"**Run `{current['run_id']}`: {verb}**"
        return handler

    # method.input, not .change: the demo button sets the method with its own values, which a refill would undo
    gr.on([subject.change, method.input], fill, [ctx.browser, subject, method, class_noun], [*adv.values(), class_noun],
          api_name="train_fill").then(explain, [ctx.browser, ctx.photo_count, *setting_inputs], config_md, api_name=False)
    gr.on([identifier.change, class_noun.change], check, [identifier, class_noun], id_report, api_name="train_check",
          trigger_mode="always_last")
    gr.on([c.change for c in setting_inputs[2:]] + [ctx.photo_count.change], explain,
          [ctx.browser, ctx.photo_count, *setting_inputs], config_md, api_name="train_explain", trigger_mode="always_last")
    ctx.subject.change(lambda s: s, ctx.subject, subject, api_name=False)
    start.click(start_run, [ctx.browser, ctx.dataset, ctx.photo_count, *setting_inputs], [run, timer, previews, plot],
                api_name="train_start")
    live = [run, timer, status, progress, class_progress, plot, previews]
    timer.tick(poll, [ctx.browser, run], live, api_name="train_poll", show_progress="hidden")
    for button, action, verb in ((pause, "pause", "pausing"), (resume, "resume", "resumed"), (stop, "stop", "stopping"),
                                 (sample, "sample_now", "a preview will be drawn at the next step")):
        button.click(control(action, verb), [ctx.browser, run], status, api_name=f"train_{action}")
    return TrainTab(ctx, run, timer, live, [method, identifier, class_noun, *adv.values(), extra])
