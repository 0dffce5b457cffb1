"""Curate tab: upload photos (or a zip, or the demo subject), see a verdict per photo."""
from __future__ import annotations

import gradio as gr
import dataclasses

from PIL import Image, ImageDraw

from studio.ui import views
from studio.ui.app import Ctx, friendly

THUMB = 256
PREVIEW = 384


def thumbnail(studio, user: str, dataset_id: str, verdict, box=None) -> Image.Image:
    """The photo re-encoded from the server's copy (never the raw upload), with its crop box (`box` when given,
    e.g. the user's own crop) drawn in."""
    crop = getattr(verdict, "crop_box", None)
    if box is None and crop is not None:
        box = crop.to_tuple()
    return framed(studio, user, dataset_id, verdict.name, box if verdict.accepted else None)


def framed(studio, user: str, dataset_id: str, name: str, box, side: int = THUMB) -> Image.Image:
    """The photo scaled to fit `side`, with the green crop box (left, top, right, bottom) drawn in when given."""
    from studio.data.images import load_photo

    try:
        image = load_photo(studio.photo_path(user, dataset_id, name), min_side=1).image
    except (ValueError, OSError, KeyError):
        return Image.new("RGB", (side, side), (90, 90, 90))
    if box is not None:
        width = max(2, image.width // 100)
        ImageDraw.Draw(image).rectangle(tuple(box), outline=(80, 220, 120), width=width)
    image.thumbnail((side, side))
    return image


def build(ctx: Ctx) -> gr.Button:
    studio = ctx.studio
    with gr.Row():
        with gr.Column(scale=1):
            files = gr.File(label="Photos or a .zip", file_count="multiple", elem_id="photo-upload")
            with gr.Row():
                demo_btn = gr.Button("Try the demo subject", elem_id="demo-btn")
                clear_btn = gr.Button("New photo set", variant="secondary")
            subject = gr.Radio(["object", "face", "style"], value="object", label="Subject type", elem_id="curate-subject")
            resolution = gr.Number(studio.native_resolution(), label="Training resolution (px)", precision=0, minimum=32, maximum=2048)
            recheck = gr.Button("Check again")
        with gr.Column(scale=2):
            summary = gr.Markdown("Upload 3-20 photos of your subject: different angles, backgrounds and light.",
                                  elem_id="curate-summary")
            gallery = gr.Gallery(label="Verdicts (green box = training crop)", columns=4, height=520,
                                 object_fit="contain", elem_id="curate-gallery")
            with gr.Group(elem_id="curate-edit"):
                gr.Markdown("**Edit a photo**: an optional caption, and your own square crop if the green box misses.")
                with gr.Row():
                    with gr.Column(scale=1):
                        photo = gr.Dropdown([], value=None, label="Photo", elem_id="curate-edit-photo")
                        preview = gr.Image(label="Training crop", type="pil", interactive=False, height=PREVIEW,
                                           elem_id="curate-edit-preview")
                    with gr.Column(scale=1):
                        note = gr.Markdown("", elem_id="curate-edit-note")
                        caption = gr.Textbox(label="Caption (optional): this photo's prompt instead of the instance prompt",
                                             placeholder="a photo of {identifier} {class_noun} on the beach",
                                             lines=2, max_lines=4, elem_id="curate-edit-caption")
                        save_caption_btn = gr.Button("Save caption", elem_id="curate-save-caption")
                        with gr.Row():
                            box = [gr.Number(None, label=label, precision=0, minimum=0, elem_id=f"curate-crop-{label}")
                                   for label in ("left", "top", "right", "bottom")]
                        with gr.Row():
                            save_crop_btn = gr.Button("Save crop", elem_id="curate-save-crop")
                            reset_crop_btn = gr.Button("Reset crop", variant="secondary", elem_id="curate-reset-crop")
    ctx.subject = subject
    edits = gr.State({})  # {photo name: {"box", "manual", "caption"}} from the last check

    def report(user: str, dataset_id: str, subject_type: str, res: float):
        result = studio.curate(user, dataset_id, subject_type, int(res or 512))
        verdicts = [v for v in result.verdicts if v.name != studio.CROPS_FILE]  # the crops file is not a photo
        try:
            crops = studio.crops(user, dataset_id)
        except ValueError as exc:  # a damaged crops.json: say so, show the automatic crops
            crops, result.warnings = {}, [*result.warnings, str(exc)]
        result = dataclasses.replace(result, verdicts=verdicts)
        found = views.photo_edits(result, crops)
        items = [(thumbnail(studio, user, dataset_id, v, found.get(v.name, {}).get("box")),
                  views.verdict_caption(v, found.get(v.name, {}).get("manual", False))) for v in verdicts]
        return dataset_id, len(result.accepted), items, views.curation_markdown(result), found

    def photo_view(user: str, dataset_id: str, name: str | None, found: dict) -> tuple:
        edit = (found or {}).get(name)
        if not dataset_id or not edit:
            return None, "", *views.crop_fields(None)
        return framed(studio, user, dataset_id, name, edit["box"], PREVIEW), views.crop_note(name, edit), *views.crop_fields(edit)

    @friendly(5)
    def upload(browser_id, new_files, dataset_id, subject_type, res, request: gr.Request):
        if not new_files:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        if ctx.shared and len(new_files) > ctx.max_upload_files:
            raise ValueError(f"at most {ctx.max_upload_files} files per upload here; zip them or send fewer")
        user = ctx.user(browser_id, request)
        paths = [getattr(f, "name", f) for f in new_files]
        try:
            dataset_id = studio.add_photos(user, paths, dataset_id)
        except KeyError:  # the set was removed: start a new one
            dataset_id = studio.add_photos(user, paths)
        return report(user, dataset_id, subject_type, res)

    @friendly(5)
    def add_demo(browser_id, subject_type, res, request: gr.Request):
        user = ctx.user(browser_id, request)
        dataset_id = studio.add_demo_photos(user)
        return report(user, dataset_id, subject_type, res)

    @friendly(5)
    def check_again(browser_id, dataset_id, subject_type, res, request: gr.Request):
        if not dataset_id:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return report(ctx.user(browser_id, request), dataset_id, subject_type, res)

    @friendly(8)
    def pick_photos(browser_id, dataset_id, found, current, request: gr.Request):
        """After a check: the picker's choices, and the picked photo's crop and caption."""
        names, name = views.edit_choice(found, current)
        view = photo_view(ctx.user(browser_id, request), dataset_id, name, found)
        return gr.Dropdown(choices=names, value=name), *view[:2], (found or {}).get(name, {}).get("caption", ""), *view[2:]

    @friendly(7)
    def show_photo(browser_id, dataset_id, name, found, request: gr.Request):
        view = photo_view(ctx.user(browser_id, request), dataset_id, name, found)
        return *view[:2], (found or {}).get(name, {}).get("caption", ""), *view[2:]

    @friendly(5)
    def save_caption(browser_id, dataset_id, name, text, subject_type, res, request: gr.Request):
        user = ctx.user(browser_id, request)
        if not dataset_id:
            raise ValueError("upload photos first")
        kept = studio.set_caption(user, dataset_id, name, text)
        gr.Info(f"Caption saved for {name}" if kept else f"Caption removed from {name}")
        return report(user, dataset_id, subject_type, res)

    def crop_saved(user: str, dataset_id: str, name: str, subject_type: str, res: float) -> tuple:
        out = report(user, dataset_id, subject_type, res)
        return *out, *photo_view(user, dataset_id, name, out[-1])

    @friendly(11)
    def save_crop(browser_id, dataset_id, name, left, top, right, bottom, subject_type, res, request: gr.Request):
        user = ctx.user(browser_id, request)
        if not dataset_id:
            raise ValueError("upload photos first")
        if None in (left, top, right, bottom):
            raise ValueError("fill in all four crop numbers (left, top, right, bottom)")
        studio.set_crop(user, dataset_id, name, [left, top, right, bottom])
        return crop_saved(user, dataset_id, name, subject_type, res)

    @friendly(11)
    def reset_crop(browser_id, dataset_id, name, subject_type, res, request: gr.Request):
        user = ctx.user(browser_id, request)
        if not dataset_id:
            raise ValueError("upload photos first")
        studio.set_crop(user, dataset_id, name, None)
        return crop_saved(user, dataset_id, name, subject_type, res)

    outs = [ctx.dataset, ctx.photo_count, gallery, summary, edits]
    view_outs = [preview, note, caption, *box]
    crop_outs = [*outs, preview, note, *box]

    def then_pick(event, api_name: str) -> None:  # refill the photo picker after every check
        event.then(pick_photos, [ctx.browser, ctx.dataset, edits, photo], [photo, *view_outs], api_name=api_name)

    then_pick(files.upload(upload, [ctx.browser, files, ctx.dataset, subject, resolution], outs, api_name="curate_upload"),
              "curate_photos")
    then_pick(demo_btn.click(add_demo, [ctx.browser, subject, resolution], outs, api_name="curate_demo"), "curate_photos_demo")
    then_pick(recheck.click(check_again, [ctx.browser, ctx.dataset, subject, resolution], outs, api_name="curate_check"),
              "curate_photos_check")
    then_pick(subject.change(check_again, [ctx.browser, ctx.dataset, subject, resolution], outs, api_name="curate_subject"),
              "curate_photos_subject")
    then_pick(clear_btn.click(lambda: (None, 0, [], "New photo set: upload photos.", {}, None), None,
                              [*outs, files], api_name="curate_clear"), "curate_photos_clear")
    photo.input(show_photo, [ctx.browser, ctx.dataset, photo, edits], view_outs, api_name="curate_photo")
    save_caption_btn.click(save_caption, [ctx.browser, ctx.dataset, photo, caption, subject, resolution], outs,
                           api_name="curate_save_caption")
    save_crop_btn.click(save_crop, [ctx.browser, ctx.dataset, photo, *box, subject, resolution], crop_outs,
                        api_name="curate_save_crop")
    reset_crop_btn.click(reset_crop, [ctx.browser, ctx.dataset, photo, subject, resolution], crop_outs,
                         api_name="curate_reset_crop")
    return demo_btn  # the Train tab fills in the demo's settings when it is clicked
