"""Train tab: a preset (by subject and method, or the demo's), its settings shown with where each comes from,
then a run to watch live: loss, previews, and Pause / Resume / Stop / Sample now.

Settings are one registry of named components (`TrainTab.fields`): handlers read values by name, never by
position. Only the run id and an event cursor live in the session; a timer asks the engine for events since
the cursor and sends only what changed, so a browser watching a run stays nearly idle.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from studio.concepts import Concept
from studio.ui import views
from studio.ui.kit import Ctx, on, preview_images, skips, then

METHODS = ["LoRA", "Full fine-tune", "Textual inversion", "Pivotal (token + LoRA)"]
SUBJECT_TYPES = ["object", "face", "style"]
CONTROLS = ("pause", "resume", "stop", "sample", "use")  # the run's buttons, greyed out when they cannot act
# Each tick is one event through Gradio's queue, and the page spends about 0.28 s of CPU on one, whatever it carries
# (benchmarks/browser_cpu.py: 28 % of a core at 1 s with only the progress text updated, 36 % with everything):
# a tick every 2 s halves what a browser watching a run costs, and progress still moves while you look.
POLL_EVERY_S = 2.0
PLOT_EVERY_S = 5.0  # a redrawn chart costs the browser far more than the server: at most one every 5 s while training

# The engine knobs in the "Advanced" accordion, in display order: label, one line of why, and the widget's kind.
ADVANCED = {
    "max_steps": ("Steps (0 = auto from photos)", "about 100-200 steps per photo; too many burns the photos in", "int"),
    "learning_rate": ("Learning rate", "full fine-tunes want ~1e-6 (faces) to 2e-6 (objects); LoRA ~1e-4", "float"),
    "batch_size": ("Batch size", "photos per step (plus as many class images with prior preservation)", "int"),
    "lora_rank": ("LoRA rank", "size of the LoRA: 8 for objects, 16+ for faces and styles", "int"),
    "adapter": ("Adapter (LoRA runs)", "lora: attention only; locon: + convolutions, for fine detail; dora: "
                "steadier likeness; lokr/loha: LyCORIS, small files", ["lora", "locon", "dora", "lokr", "loha"]),
    "conv_rank": ("Conv rank (LoCon; 0 = LoRA rank)", "rank on the convolutions, where fine detail is drawn", "int"),
    "with_prior_preservation": ("Prior preservation", "trains on the class too, so 'a dog' stays any dog", "bool"),
    "num_class_images": ("Class images", "pictures of the class drawn by the untouched model, 100-200 usual", "int"),
    "prior_loss_weight": ("Prior loss weight", "1 = the paper's balance of subject and class", "float"),
    "snr_gamma": ("Min-SNR gamma (0 = off)", "5 weights the steps that teach most; speeds up learning", "float"),
    "offset_noise": ("Offset noise", "0.05-0.1 lets the model draw very dark or bright pictures", "float"),
    "resolution": ("Resolution (0 = model's)", "training size in px; 0 uses the base model's own", "int"),
    "mixed_precision": ("Mixed precision", "auto: bf16/fp16 on a GPU, full precision on a CPU", ["auto", "no", "fp16", "bf16"]),
    "gradient_checkpointing": ("Gradient checkpointing (less memory, slower)", "recomputes activations: ~40 % less memory", "bool"),
    "preview_every": ("Preview every N steps (0 = 4 per run)", "previews show learning and drift as it happens", "int"),
    "preview_budget": ("Preview budget (share of the run's time)", "a preview due is skipped while previews would take "
                       "more than this (0.1 = 10 %); the last step's is always drawn; 1 = draw every one", "float"),
    "checkpoint_every": ("Checkpoint every N steps (0 = end only)", "earlier checkpoints to go back to if it overfits", "int"),
    "detail_stage": ("Detail stage (tune the VAE decoder on the photos)", "DreamBooth's second stage, for fine detail: "
                     "runs after training; off by default (the README says what it measured)", "bool"),
    "seed": ("Seed", "the same seed and settings give the same run", "int"),
}
TABLE_FIELDS = ("identifier", "class_noun", "method", *ADVANCED)  # the settings table: what Start will run
# The settings inputs of /train_start and /train_explain (after browser id, photo set, photo count), by name.
SETTING_NAMES = ("subject_type", "method", "identifier", "class_noun", *ADVANCED, "extra", "preset", "run_name")


def advanced_component(name: str) -> gr.components.Component:
    label, why, kind = ADVANCED[name]
    if kind == "bool":
        return gr.Checkbox(label=label, info=why)
    if isinstance(kind, list):
        return gr.Dropdown(kind, label=label, info=why)
    return gr.Number(label=label, info=why, precision=0 if kind == "int" else None, minimum=0)


@dataclass
class TrainTab:
    ctx: Ctx
    fields: dict[str, Any]  # setting name -> component, in SETTING_NAMES order
    buttons: dict[str, gr.Button]  # start, pause, resume, stop, sample, use (this checkpoint as the output)
    status: gr.Markdown
    progress: gr.Textbox
    class_progress: gr.Textbox
    plot: gr.LinePlot
    scores: gr.LinePlot
    previews: gr.Gallery
    keep: gr.Dropdown  # which checkpoint "Use this checkpoint" makes the run's output
    config_md: gr.Markdown
    id_report: gr.Markdown
    more: dict[str, Any]  # "More subjects": photos, identifier, class_noun, add, clear, table, and their list (state)
    run: gr.State = field(default_factory=lambda: gr.State(None))
    timer: gr.Timer = field(default_factory=lambda: gr.Timer(POLL_EVERY_S, active=False))

    @property
    def studio(self):
        return self.ctx.studio

    @property
    def setting_inputs(self) -> list:
        return [self.fields[name] for name in SETTING_NAMES]

    @property
    def live_outputs(self) -> list:
        """What the poll updates; the five displays last (API clients read them from the end)."""
        return [self.run, self.timer, *(self.buttons[b] for b in CONTROLS), self.keep, self.ctx.runs_version, self.scores, self.status, self.progress, self.class_progress, self.plot,
                self.previews]

    @property
    def demo_outputs(self) -> list:
        return [self.fields[n] for n in ("subject_type", "method", "preset", "identifier", "class_noun", *ADVANCED, "extra")]

    # -- settings ------------------------------------------------------------------------
    def values(self, args) -> dict[str, Any]:
        return dict(zip(SETTING_NAMES, args))

    def preset_values(self, user: str, preset: str, method: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
        """(forced overrides, the preset's resolved values, their sources) for a preset run with `method`."""
        presets = self.studio.presets(user)
        if preset not in presets:
            raise ValueError(f"unknown preset {preset!r}; pick one from the list")
        forced = {} if presets[preset].values.get("method", "lora") == views.method_of(method) else {"method": views.method_of(method)}
        noun = {} if presets[preset].values.get("class_noun") else {"class_noun": "subject"}
        resolved = self.studio.resolve([preset], {**forced, **noun}, num_images=1, user=user)
        return forced, resolved.config.to_dict(), resolved.sources

    def settings(self, user: str, values: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        """Component values -> (presets, overrides): only what differs from the preset counts as 'set by you'."""
        preset = values["preset"] or views.preset_name(values["subject_type"], values["method"], self.studio.presets(user))[0]
        forced, base, _ = self.preset_values(user, preset, values["method"])
        overrides = dict(forced)
        for name in ("identifier", "class_noun"):
            text = (values[name] or "").strip()
            if text and text != base[name]:
                overrides[name] = text
        overrides.update(views.changed_overrides({k: values[k] for k in ADVANCED}, base))
        overrides.update(views.parse_extra_settings(values["extra"]))
        return [preset], overrides

    def filled(self, user: str, preset: str, method: str) -> tuple:
        """The preset's values for the Advanced controls (and its class noun and identifier, when it has them)."""
        _, config, sources = self.preset_values(user, preset, method)
        own = self.studio.presets(user)[preset].values
        return (*views.advanced_values(config, sources, ADVANCED).values(), own.get("identifier") or gr.skip(),
                own.get("class_noun") or gr.skip())

    def fill(self, browser_id, preset: str, method: str, request: gr.Request):
        return self.filled(self.ctx.user(browser_id, request), preset, method)

    def explain(self, request: gr.Request, browser_id, count, *args):
        values = self.values(args)
        user = self.ctx.user(browser_id, request)
        presets, overrides = self.settings(user, values)
        if not overrides.get("class_noun") and values["subject_type"] != "style" and not values["class_noun"]:
            overrides["class_noun"] = "(class noun)"
        resolved = self.studio.resolve(presets, overrides, num_images=int(count or 0) or 1, user=user)
        return f"**Preset `{presets[0]}`**: exactly what Start will run\n\n" + views.config_table(
            resolved.config.to_dict(), resolved.sources, TABLE_FIELDS, self.studio.base_models.native_resolution())

    def preset_for_subject(self, browser_id, subject_type, method, request: gr.Request):
        user = self.ctx.user(browser_id, request)
        preset = views.preset_name(subject_type, method, self.studio.presets(user))[0]
        return preset, *self.filled(user, preset, method)

    def preset_for_method(self, browser_id, preset, subject_type, method, request: gr.Request):
        """A new method keeps the preset's family (demo-full <-> demo-lora) where it has one."""
        user = self.ctx.user(browser_id, request)
        available = self.studio.presets(user)
        preset = views.preset_for_method(preset, method, available) or views.preset_name(subject_type, method, available)[0]
        return preset, *self.filled(user, preset, method)

    def follow_subject(self, browser_id, subject_type, preset, method, request: gr.Request):
        """The subject type chosen on Curate: keep a preset made for it (the demo's too), else switch."""
        user = self.ctx.user(browser_id, request)
        presets = self.studio.presets(user)
        if preset in presets and presets[preset].values.get("subject_type", "object") == subject_type:
            return skips(len(ADVANCED) + 4)
        preset = views.preset_name(subject_type, method, presets)[0]
        return subject_type, preset, *self.filled(user, preset, method)

    def fill_demo(self, browser_id, request: gr.Request):
        """The demo subject's preset, so one more click starts a run that works; its class noun and prompts too."""
        user = self.ctx.user(browser_id, request)
        _, presets, overrides = self.studio.demo_settings()
        resolved = self.studio.resolve(presets, overrides, num_images=5, user=user)
        config = resolved.config
        method = METHODS[1] if config.method == "full" else METHODS[0]
        return (config.subject_type, method, presets[0], config.identifier, config.class_noun,
                *views.advanced_values(config.to_dict(), resolved.sources, ADVANCED).values(), "")

    def check(self, identifier_text, noun):
        if not (identifier_text or "").strip():
            return "✗ the identifier is empty; pick a rare word such as `sks`"
        return views.identifier_markdown(self.studio.check_identifier(identifier_text.strip(), (noun or "thing").strip()))

    def restore(self, saved: dict):
        """A reopened page gets back the settings this browser last had (they are kept in its localStorage)."""
        if not isinstance(saved, dict) or not saved:
            return skips(len(SETTING_NAMES))
        return tuple(saved.get(name, gr.skip()) for name in SETTING_NAMES)

    # -- more subjects in the run ---------------------------------------------------------
    def add_subject(self, browser_id, files, identifier, class_noun, listed, request: gr.Request):
        """Another subject for the next run: its photos become a photo set of their own, named by its identifier."""
        identifier, class_noun, listed = (identifier or "").strip(), (class_noun or "").strip(), list(listed or [])
        if not files:
            raise ValueError("add the other subject's photos first (3-20 of them)")
        if not identifier or not class_noun:
            raise ValueError("give the other subject its own identifier (a rare word such as zwx) and its class noun")
        if any(s["identifier"].lower() == identifier.lower() for s in listed):
            raise ValueError(f"a subject called {identifier!r} is already in the list; give each its own identifier")
        self.ctx.check_upload(files)
        user = self.ctx.user(browser_id, request)
        dataset_id = self.studio.photos.add(user, [getattr(f, "name", f) for f in files])
        listed.append({"dataset_id": dataset_id, "identifier": identifier, "class_noun": class_noun,
                       "photos": self.studio.photos.count(user, dataset_id)})
        return listed, views.subjects_markdown(listed), None, ""

    # -- the run -------------------------------------------------------------------------
    def start(self, request: gr.Request, browser_id, dataset_id, count, *args):
        if not dataset_id:
            raise ValueError("no photos yet: upload some in the Curate tab first")
        user = self.ctx.user(browser_id, request)
        *args, listed = args
        values = self.values(args)
        presets, overrides = self.settings(user, values)
        more = [Concept(s["identifier"], s["class_noun"], dataset_id=s["dataset_id"]) for s in listed or []]
        run_id = self.studio.start_training(user, dataset_id, presets, overrides, name=values["run_name"] or "",
                                            more_subjects=more)
        gr.Info(f"run {run_id} queued")
        return {"run_id": run_id, "cursor": 0}, gr.Timer(active=True), [], None, gr.Dropdown(choices=[], value=None)

    def attach(self, browser_id, request: gr.Request):
        """A reopened page shows the user's run: the one training now (re-attached), else the newest."""
        run_id = self.studio.latest_run(self.ctx.user(browser_id, request))
        if run_id is None:
            return gr.skip(), gr.skip()
        return {"run_id": run_id, "cursor": 0}, gr.Timer(active=True)

    def poll(self, browser_id, current, version, request: gr.Request):
        """Only what changed since the last tick: a browser watching a run should stay nearly idle."""
        if not current or not current.get("run_id"):
            return gr.skip(), gr.Timer(active=False), *skips(len(self.live_outputs) - 2)
        user, run_id = self.ctx.user(browser_id, request), current["run_id"]
        try:
            new, cursor = self.studio.events(user, run_id, current["cursor"])
        except KeyError:  # the run was deleted (or never was this user's): stop polling
            return (None, gr.Timer(active=False), *skips(len(CONTROLS) + 3), views.status_markdown(None, []), *skips(4))
        state, has, now = self.studio.run_state(user, run_id), {e.kind for e in new}, time.monotonic()
        # The chart is redrawn at most every PLOT_EVERY_S, and once more at the end with every step in it.
        plot_due = "step" in has or current.get("plot_pending", False)
        redraw = plot_due and (now - current.get("plot_at", 0) >= PLOT_EVERY_S or state.status.is_terminal)
        events = self.studio.events(user, run_id, 0)[0] if new or redraw or current["cursor"] == 0 else []
        status = views.status_markdown(state, events, self.studio.run_meta(user, run_id).name) if events else None
        controls = views.controls(state)
        memo = {"run_id": run_id, "cursor": cursor, "plot_at": now if redraw else current.get("plot_at", 0),
                "plot_pending": plot_due and not redraw, "status": status or current.get("status"),
                "controls": controls, "ended": state.status.is_terminal}
        done = state.status.is_terminal and not new and not memo["plot_pending"]
        return (memo, gr.Timer(active=False) if done else gr.skip(),  # a ticking timer is left alone: nothing to send
                *(gr.Button(interactive=controls[b]) if controls != current.get("controls") else gr.skip()
                  for b in CONTROLS),
                self._keep_choices(user, run_id, events) if state.status.is_terminal and not current.get("ended") else gr.skip(),
                (version or 0) + 1 if state.status.is_terminal and not current.get("ended") else gr.skip(),
                self._scores(events) if "score" in has or (current["cursor"] == 0 and events) else gr.skip(),
                status if status is not None and status != current.get("status") else gr.skip(),
                views.progress_text(events) if new else gr.skip(),
                views.class_images_text(events) if "class_images" in has else gr.skip(),
                views.loss_frame(events) if redraw else gr.skip(),
                preview_images(self.studio, user, run_id, events) if "preview" in has else gr.skip())

    def _keep_choices(self, user: str, run_id: str, events) -> gr.Dropdown:
        """The checkpoints a finished run can make its output, the current output chosen."""
        choices = views.checkpoint_choices(events, self.studio.checkpoint_steps(user, run_id))
        return gr.Dropdown(choices=choices, value=views.output_choice(events, choices))

    def use_checkpoint(self, browser_id, current, choice, version, request: gr.Request):
        """The chosen checkpoint's files become the run's output (the last step's stay in output/last)."""
        if not current or not current.get("run_id") or not choice:
            raise ValueError("pick the checkpoint to use first (a finished run's checkpoints are listed)")
        user, run_id = self.ctx.user(browser_id, request), current["run_id"]
        self.studio.use_checkpoint(user, run_id, None if choice == "last" else int(choice))
        gr.Info("the last step's files are the output" if choice == "last" else f"step {choice}'s files are the output")
        events = self.studio.events(user, run_id, 0)[0]
        return views.score_frame(events), (version or 0) + 1  # Generate and Runs draw and list the new output

    @staticmethod
    def _scores(events):
        """The scorecard chart's data; nothing until the first score (a chart first given no rows stays blank after)."""
        frame = views.score_frame(events)
        return frame if not frame.empty else gr.skip()

    def control(self, action: str, verb: str):
        def handler(browser_id, current, request: gr.Request):
            if not current or not current.get("run_id"):
                raise ValueError("no run to control; press Start first")
            getattr(self.studio, action)(self.ctx.user(browser_id, request), current["run_id"])
            gr.Info(verb)
            return f"**Run `{current['run_id']}`: {verb}**", gr.Timer(active=True)
        return handler

    # -- wiring ----------------------------------------------------------------------------
    def wire(self) -> None:
        ctx, f = self.ctx, self.fields
        advanced = [f[name] for name in ADVANCED]
        explain_inputs = [ctx.browser, ctx.photo_count, *self.setting_inputs]

        filled = [*advanced, f["identifier"], f["class_noun"]]
        # .input, not .change: only the user's own choice refills; the demo button sets these with its own values
        on(f["subject_type"].input, self.preset_for_subject, [ctx.browser, f["subject_type"], f["method"]],
           [f["preset"], *filled], api_name=False)
        on(f["method"].input, self.preset_for_method, [ctx.browser, f["preset"], f["subject_type"], f["method"]],
           [f["preset"], *filled], api_name=False)
        on(ctx.subject_type.change, self.follow_subject, [ctx.browser, ctx.subject_type, f["preset"], f["method"]],
           [f["subject_type"], f["preset"], *filled], api_name=False)
        on(f["preset"].input, self.fill, [ctx.browser, f["preset"], f["method"]], filled, api_name="train_fill")
        on([f["identifier"].change, f["class_noun"].change], self.check, [f["identifier"], f["class_noun"]], self.id_report,
           api_name="train_check", trigger_mode="always_last")
        on([c.change for c in self.setting_inputs] + [ctx.photo_count.change], self.explain, explain_inputs, self.config_md,
           api_name="train_explain", trigger_mode="always_last", show_progress="hidden")
        gr.on([c.change for c in self.setting_inputs], lambda *a: dict(zip(SETTING_NAMES, a)), self.setting_inputs,
              self.ctx.train_settings, api_name=False, trigger_mode="always_last", show_progress="hidden")
        more = self.more
        on(more["add"].click, self.add_subject,
           [ctx.browser, more["photos"], more["identifier"], more["class_noun"], more["list"]],
           [more["list"], more["table"], more["photos"], more["identifier"]], api_name="train_add_subject")
        on(more["clear"].click, lambda: ([], views.subjects_markdown([])), None, [more["list"], more["table"]],
           api_name="train_clear_subjects")
        on(self.buttons["start"].click, self.start,
           [ctx.browser, ctx.dataset, ctx.photo_count, *self.setting_inputs, more["list"]],
           [self.run, self.timer, self.previews, self.plot, self.keep], api_name="train_start").then(
            lambda v: (v or 0) + 1, ctx.runs_version, ctx.runs_version, api_name=False)  # lists show the new run
        on(self.timer.tick, self.poll, [ctx.browser, self.run, ctx.runs_version], self.live_outputs, api_name="train_poll",
           show_progress="hidden")
        on(self.buttons["use"].click, self.use_checkpoint, [ctx.browser, self.run, self.keep, ctx.runs_version],
           [self.scores, ctx.runs_version], api_name="train_use_checkpoint")
        for action, verb in (("pause", "pausing"), ("resume", "resumed"), ("stop", "stopping"),
                             ("sample_now", "a preview will be drawn at the next step")):
            button = self.buttons["sample" if action == "sample_now" else action]
            on(button.click, self.control(action, verb), [ctx.browser, self.run], [self.status, self.timer],
               api_name=f"train_{action}")

    def on_load(self, loaded) -> None:
        restored = then(loaded, self.restore, [self.ctx.train_settings], self.setting_inputs, api_name=False, show_progress="hidden")
        then(restored, self.attach, [self.ctx.browser], [self.run, self.timer], api_name="train_attach")


def build(ctx: Ctx) -> TrainTab:
    studio = ctx.studio
    first = studio.resolve(["object-lora"], {"class_noun": "subject"}, num_images=1)
    with gr.Row(elem_id="train-controls"):
        buttons = {"start": gr.Button("Start", variant="primary", elem_id="train-start", min_width=90),
                   "pause": gr.Button("Pause", interactive=False, elem_id="train-pause", min_width=80),
                   "resume": gr.Button("Resume", interactive=False, elem_id="train-resume", min_width=80),
                   "stop": gr.Button("Stop", variant="stop", interactive=False, elem_id="train-stop", min_width=80),
                   "sample": gr.Button("Sample now", interactive=False, elem_id="train-sample", min_width=100)}
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            fields = _settings_panel(studio, first)
            more = _more_subjects_panel()
            id_report = gr.Markdown("", elem_id="identifier-report")
            config_md = gr.Markdown(elem_id="resolved-config")
        with gr.Column(scale=2, min_width=300):
            status = gr.Markdown(views.status_markdown(None, []), elem_id="train-status")
            with gr.Row():
                progress = gr.Textbox(label="Progress", interactive=False, elem_id="train-progress", min_width=160)
                class_progress = gr.Textbox(label="Class-image progress", interactive=False, min_width=160)
            with gr.Row():
                plot = gr.LinePlot(None, x="step", y="loss", color="series", title="Loss (smoothed)",
                                   height=260, elem_id="loss-plot", min_width=280)
                scores = gr.LinePlot(None, x="step", y="score", color="series", height=260, elem_id="score-plot",
                                     title="Scorecard per checkpoint (step 0 = base model)", y_lim=[0, 1], min_width=280,
                                     color_map=views.SCORE_COLOURS, caption="pale lines: the base model; "
                                     f"{views.PICK_SERIES}: the checkpoint kept (while training: the best so far)")
            with gr.Row(equal_height=True):
                keep = gr.Dropdown([], value=None, label="Checkpoint to use as the run's output", scale=3,
                                   info="the scorecard picks one when the run ends; choose another here",
                                   elem_id="train-keep")
                buttons["use"] = gr.Button("Use this checkpoint", interactive=False, elem_id="train-use", scale=1,
                                           min_width=120)
            previews = gr.Gallery(label="Previews (the class prompt shows drift)", columns=4, height="auto",
                                  object_fit="contain", elem_id="preview-gallery")
    tab = TrainTab(ctx, fields, buttons, status, progress, class_progress, plot, scores, previews, keep, config_md,
                   id_report, more)
    tab.wire()
    return tab


def _settings_panel(studio, first) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    with gr.Row():
        fields["subject_type"] = gr.Radio(SUBJECT_TYPES, value="object", label="Subject type", elem_id="train-subject")
        fields["method"] = gr.Radio(METHODS, value="LoRA", label="Method", elem_id="train-method",
                                    info="LoRA: small file, little memory. Full: best likeness, needs a big GPU. "
                                         "Textual inversion: a new word only, a file of kilobytes. Pivotal: both.")
    fields["preset"] = gr.Dropdown(sorted(studio.presets()), value="object-lora", label="Preset",
                                   info="follows the subject type and method; the demo has its own", elem_id="train-preset")
    with gr.Row():
        fields["identifier"] = gr.Textbox("sks", label="Identifier (rare word)", elem_id="identifier", min_width=120)
        fields["class_noun"] = gr.Textbox("", label="Class noun", placeholder="dog, person, toy...", elem_id="class-noun",
                                          min_width=120)
    fields["run_name"] = gr.Textbox("", label="Run name (optional)", elem_id="run-name",
                                    placeholder="default: <identifier> <class> · <preset> · <date>")
    with gr.Accordion("Advanced", open=False):
        defaults = views.advanced_values(first.config.to_dict(), first.sources, ADVANCED)
        for name in ADVANCED:
            fields[name] = advanced_component(name)
            fields[name].value = defaults[name]
        fields["extra"] = gr.Textbox(label="Extra settings (TOML `key = value` lines)", lines=2,
                                     info="any other setting of studio/config.py, e.g. class_image_steps",
                                     placeholder="preview_seeds = [0, 1]\nclass_image_steps = 20")
    return {name: fields[name] for name in SETTING_NAMES}


def _more_subjects_panel() -> dict[str, Any]:
    """Several subjects in one run ("my two dogs"): each added subject brings its photos, identifier and class noun;
    Start teaches them all beside the Curate tab's subject, each with its own class prior."""
    more: dict[str, Any] = {"list": gr.State([])}
    with gr.Accordion("More subjects in this run (optional)", open=False, elem_id="more-subjects"):
        more["photos"] = gr.File(file_count="multiple", file_types=["image"], label="Photos of another subject",
                                 elem_id="more-photos")
        with gr.Row():
            more["identifier"] = gr.Textbox("", label="Its identifier", placeholder="zwx", min_width=100,
                                            elem_id="more-identifier")
            more["class_noun"] = gr.Textbox("", label="Its class noun", placeholder="cat", min_width=100,
                                            elem_id="more-class-noun")
        with gr.Row():
            more["add"] = gr.Button("Add this subject", elem_id="more-add", min_width=120)
            more["clear"] = gr.Button("Remove them all", elem_id="more-clear", min_width=120)
        more["table"] = gr.Markdown(views.subjects_markdown([]), elem_id="more-table")
    return more
