"""Curate tab: upload photos (or a zip, or the demo subject), see a verdict per photo, caption and crop them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image, ImageDraw

from studio.ui import views
from studio.ui.kit import Ctx, on, skips, then

THUMB = 256
PREVIEW = 384
SUBJECT_TYPES = ["object", "face", "style"]


def framed(studio, user: str, dataset_id: str, name: str, box, side: int = THUMB) -> Image.Image:
    """The photo re-encoded from the server's copy (never the raw upload), scaled to fit `side`, with the green crop
    box (left, top, right, bottom) drawn in when given."""
    from studio.data.images import load_photo

    try:
        image = load_photo(studio.photos.photo_path(user, dataset_id, name), min_side=1).image
    except (ValueError, OSError, KeyError):
        return Image.new("RGB", (side, side), (90, 90, 90))
    if box is not None:
        width = max(2, image.width // 100)
        ImageDraw.Draw(image).rectangle(tuple(box), outline=(80, 220, 120), width=width)
    image.thumbnail((side, side))
    return image


@dataclass
class CurateTab:
    ctx: Ctx
    files: gr.File
    demo_button: gr.Button
    clear: gr.Button
    subject: gr.Radio
    resolution: gr.Number
    recheck: gr.Button
    summary: gr.Markdown
    gallery: gr.Gallery
    photo: gr.Dropdown
    preview: gr.Image
    note: gr.Markdown
    caption: gr.Textbox
    save_caption: gr.Button
    box: list[gr.Number]
    save_crop: gr.Button
    reset_crop: gr.Button
    edits: gr.State  # {photo name: {"box", "manual", "caption"}} from the last check

    @property
    def studio(self):
        return self.ctx.studio

    # -- what a check shows ----------------------------------------------------------------
    @property
    def report_outputs(self) -> list:
        return [self.ctx.dataset, self.ctx.photo_count, self.gallery, self.summary, self.edits]

    @property
    def view_outputs(self) -> list:
        return [self.preview, self.note, self.caption, *self.box]

    def report(self, user: str, dataset_id: str, subject_type: str, res: float) -> tuple:
        result = self.studio.photos.check(user, dataset_id, subject_type, int(res or 512))
        try:
            crops = self.studio.photos.crops(user, dataset_id)
        except ValueError as exc:  # a damaged crops.json: say so, show the automatic crops
            crops, result.warnings = {}, [*result.warnings, str(exc)]
        found = views.photo_edits(result, crops)
        items = []
        for verdict in result.verdicts:
            edit = found.get(verdict.name, {})
            box = edit.get("box") or (verdict.crop_box.to_tuple() if verdict.crop_box is not None else None)
            items.append((framed(self.studio, user, dataset_id, verdict.name, box if verdict.accepted else None),
                          views.verdict_caption(verdict, edit.get("manual", False))))
        return dataset_id, len(result.accepted), items, views.curation_markdown(result), found

    def photo_view(self, user: str, dataset_id: str, name: str | None, found: dict) -> tuple:
        edit = (found or {}).get(name)
        if not dataset_id or not edit:
            return None, "", "", *views.crop_fields(None)
        return (framed(self.studio, user, dataset_id, name, edit["box"], PREVIEW), views.crop_note(name, edit),
                edit.get("caption", ""), *views.crop_fields(edit))

    # -- handlers --------------------------------------------------------------------------
    def upload(self, browser_id, new_files, dataset_id, subject_type, res, request: gr.Request):
        if not new_files:
            return skips(len(self.report_outputs))
        self.ctx.check_upload(new_files)
        user = self.ctx.user(browser_id, request)
        paths = [getattr(f, "name", f) for f in new_files]
        try:
            dataset_id = self.studio.photos.add(user, paths, dataset_id)
        except KeyError:  # no set yet, or it was removed: start a new one
            dataset_id = self.studio.photos.add(user, paths)
        return self.report(user, dataset_id, subject_type, res)

    def add_demo(self, browser_id, res, request: gr.Request):
        """The demo subject is an object: the subject type follows, so the Train tab explains the right prior."""
        user = self.ctx.user(browser_id, request)
        return (*self.report(user, self.studio.photos.add_demo(user), "object", res), "object")

    def check_again(self, browser_id, dataset_id, subject_type, res, request: gr.Request):
        if not dataset_id:
            return skips(len(self.report_outputs))
        return self.report(self.ctx.user(browser_id, request), dataset_id, subject_type, res)

    def restore(self, browser_id, dataset_id, subject_type, res, request: gr.Request):
        """A reopened page: the user's newest photo set with photos in it, checked again."""
        user = self.ctx.user(browser_id, request)
        dataset_id = dataset_id or self.studio.photos.latest(user)
        if not dataset_id:
            return skips(len(self.report_outputs))
        return self.report(user, dataset_id, subject_type, res)

    def pick_photos(self, browser_id, dataset_id, found, current, request: gr.Request):
        """After a check: the picker's choices, and the picked photo's crop and caption."""
        names, name = views.edit_choice(found, current)
        return gr.Dropdown(choices=names, value=name), *self.photo_view(self.ctx.user(browser_id, request), dataset_id, name, found)

    def show_photo(self, browser_id, dataset_id, name, found, request: gr.Request):
        return self.photo_view(self.ctx.user(browser_id, request), dataset_id, name, found)

    def caption_saved(self, browser_id, dataset_id, name, text, subject_type, res, request: gr.Request):
        user = self.ctx.user(browser_id, request)
        if not dataset_id:
            raise ValueError("upload photos first")
        kept = self.studio.photos.set_caption(user, dataset_id, name, text)
        gr.Info(f"Caption saved for {name}" if kept else f"Caption removed from {name}")
        return self.report(user, dataset_id, subject_type, res)

    def crop_changed(self, browser_id, dataset_id, name, box: list | None, subject_type, res, request: gr.Request) -> tuple:
        user = self.ctx.user(browser_id, request)
        if not dataset_id:
            raise ValueError("upload photos first")
        if box is not None and None in box:
            raise ValueError("fill in all four crop numbers (left, top, right, bottom)")
        self.studio.photos.set_crop(user, dataset_id, name, box)
        out = self.report(user, dataset_id, subject_type, res)
        preview, note, _, *box = self.photo_view(user, dataset_id, name, out[-1])  # the caption box keeps what it has
        return *out, preview, note, *box

    def crop_saved(self, browser_id, dataset_id, name, left, top, right, bottom, subject_type, res, request: gr.Request):
        return self.crop_changed(browser_id, dataset_id, name, [left, top, right, bottom], subject_type, res, request)

    def crop_reset(self, browser_id, dataset_id, name, subject_type, res, request: gr.Request):
        return self.crop_changed(browser_id, dataset_id, name, None, subject_type, res, request)

    # -- wiring ----------------------------------------------------------------------------
    def wire(self) -> None:
        ctx, common = self.ctx, [self.subject, self.resolution]

        def then_pick(event, api_name: str) -> None:  # refill the photo picker after every check
            then(event, self.pick_photos, [ctx.browser, ctx.dataset, self.edits, self.photo],
                 [self.photo, *self.view_outputs], api_name=api_name)

        then_pick(on(self.files.upload, self.upload, [ctx.browser, self.files, ctx.dataset, *common], self.report_outputs,
                     api_name="curate_upload"), "curate_photos")
        then_pick(on(self.demo_button.click, self.add_demo, [ctx.browser, self.resolution],
                     [*self.report_outputs, self.subject], api_name="curate_demo"), "curate_photos_demo")
        then_pick(on(self.recheck.click, self.check_again, [ctx.browser, ctx.dataset, *common], self.report_outputs,
                     api_name="curate_check"), "curate_photos_check")
        then_pick(on(self.subject.input, self.check_again, [ctx.browser, ctx.dataset, *common], self.report_outputs,
                     api_name="curate_subject"), "curate_photos_subject")
        then_pick(self.clear.click(lambda: (None, 0, [], "New photo set: upload photos.", {}, None), None,
                                   [*self.report_outputs, self.files], api_name="curate_clear"), "curate_photos_clear")
        self.subject.change(lambda s: s, self.subject, ctx.subject_type, api_name=False)  # the Train tab follows
        on(self.photo.input, self.show_photo, [ctx.browser, ctx.dataset, self.photo, self.edits], self.view_outputs,
           api_name="curate_photo")
        on(self.save_caption.click, self.caption_saved, [ctx.browser, ctx.dataset, self.photo, self.caption, *common],
           self.report_outputs, api_name="curate_save_caption")
        crop_outputs = [*self.report_outputs, self.preview, self.note, *self.box]
        on(self.save_crop.click, self.crop_saved, [ctx.browser, ctx.dataset, self.photo, *self.box, *common], crop_outputs,
           api_name="curate_save_crop")
        on(self.reset_crop.click, self.crop_reset, [ctx.browser, ctx.dataset, self.photo, *common], crop_outputs,
           api_name="curate_reset_crop")

    def on_load(self, loaded) -> None:
        restored = then(loaded, self.restore, [self.ctx.browser, self.ctx.dataset, self.subject, self.resolution],
                        self.report_outputs, api_name="curate_restore", show_progress="hidden")
        then(restored, self.pick_photos, [self.ctx.browser, self.ctx.dataset, self.edits, self.photo],
             [self.photo, *self.view_outputs], api_name=False, show_progress="hidden")


def build(ctx: Ctx) -> CurateTab:
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=280):
            files = gr.File(label="Photos or a .zip", file_count="multiple", elem_id="photo-upload")
            with gr.Row():
                demo_button = gr.Button("Try the demo subject", elem_id="demo-btn")
                clear = gr.Button("New photo set", variant="secondary")
            subject = gr.Radio(SUBJECT_TYPES, value="object", label="Subject type", elem_id="curate-subject")
            resolution = gr.Number(ctx.studio.base_models.native_resolution(), label="Training resolution (px)",
                                   info="the base model's own size; photos are cropped square to it", precision=0,
                                   minimum=32, maximum=2048, elem_id="curate-resolution")
            recheck = gr.Button("Check again")
        with gr.Column(scale=2, min_width=280):
            summary = gr.Markdown("Upload 3-20 photos of your subject: different angles, backgrounds and light.",
                                  elem_id="curate-summary")
            gallery = gr.Gallery(label="Verdicts (green box = training crop)", columns=4, height="auto",
                                 object_fit="contain", elem_id="curate-gallery")
            photo, preview, note, caption, save_caption, box, save_crop, reset_crop = _edit_panel()
    tab = CurateTab(ctx, files, demo_button, clear, subject, resolution, recheck, summary, gallery, photo, preview, note,
                    caption, save_caption, box, save_crop, reset_crop, gr.State({}))
    tab.wire()
    return tab


def _edit_panel() -> tuple[Any, ...]:
    with gr.Group(elem_id="curate-edit"):
        gr.Markdown("**Edit a photo**: an optional caption, and your own square crop if the green box misses.")
        with gr.Row():
            with gr.Column(scale=1, min_width=240):
                photo = gr.Dropdown([], value=None, label="Photo", elem_id="curate-edit-photo")
                preview = gr.Image(label="Training crop", type="pil", interactive=False, height=PREVIEW,
                                   elem_id="curate-edit-preview")
            with gr.Column(scale=1, min_width=240):
                note = gr.Markdown("", elem_id="curate-edit-note")
                caption = gr.Textbox(label="Caption (optional): this photo's prompt instead of the instance prompt",
                                     placeholder="a photo of {identifier} {class_noun} on the beach",
                                     lines=2, max_lines=4, elem_id="curate-edit-caption")
                save_caption = gr.Button("Save caption", elem_id="curate-save-caption")
                with gr.Row():
                    box = [gr.Number(None, label=label, precision=0, minimum=0, elem_id=f"curate-crop-{label}", min_width=60)
                           for label in ("left", "top", "right", "bottom")]
                with gr.Row():
                    save_crop = gr.Button("Save crop", elem_id="curate-save-crop")
                    reset_crop = gr.Button("Reset crop", variant="secondary", elem_id="curate-reset-crop")
    return photo, preview, note, caption, save_caption, box, save_crop, reset_crop
