"""Curate tab: upload photos (or a zip, or the demo subject), see a verdict per photo."""
from __future__ import annotations

import gradio as gr
from PIL import Image, ImageDraw

from studio.ui import views
from studio.ui.app import Ctx, friendly

THUMB = 256


def thumbnail(studio, user: str, dataset_id: str, verdict) -> Image.Image:
    """The photo re-encoded from the server's copy (never the raw upload), with its crop box drawn in."""
    from studio.data.images import load_photo

    try:
        image = load_photo(studio.photo_path(user, dataset_id, verdict.name), min_side=1).image
    except (ValueError, OSError, KeyError):
        return Image.new("RGB", (THUMB, THUMB), (90, 90, 90))
    box = getattr(verdict, "crop_box", None)
    if box is not None and verdict.accepted:
        image = image.copy()
        width = max(2, image.width // 100)
        ImageDraw.Draw(image).rectangle(box.to_tuple(), outline=(80, 220, 120), width=width)
    image.thumbnail((THUMB, THUMB))
    return image


def build(ctx: Ctx) -> None:
    studio = ctx.studio
    with gr.Row():
        with gr.Column(scale=1):
            files = gr.File(label="Photos or a .zip", file_count="multiple", elem_id="photo-upload")
            with gr.Row():
                demo_btn = gr.Button("Try the demo subject", elem_id="demo-btn")
                clear_btn = gr.Button("New photo set", variant="secondary")
            subject = gr.Radio(["object", "face", "style"], value="object", label="Subject type", elem_id="curate-subject")
            resolution = gr.Number(512, label="Training resolution (px)", precision=0, minimum=32, maximum=2048)
            recheck = gr.Button("Check again")
        with gr.Column(scale=2):
            summary = gr.Markdown("Upload 3-20 photos of your subject: different angles, backgrounds and light.",
                                  elem_id="curate-summary")
            gallery = gr.Gallery(label="Verdicts (green box = training crop)", columns=4, height=520,
                                 object_fit="contain", elem_id="curate-gallery")
    ctx.subject = subject

    def report(user: str, dataset_id: str, subject_type: str, res: float):
        result = studio.curate(user, dataset_id, subject_type, int(res or 512))
        items = [(thumbnail(studio, user, dataset_id, v), views.verdict_caption(v)) for v in result.verdicts]
        return dataset_id, len(result.accepted), items, views.curation_markdown(result)

    @friendly(4)
    def upload(browser_id, new_files, dataset_id, subject_type, res, request: gr.Request):
        if not new_files:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        if ctx.shared and len(new_files) > ctx.max_upload_files:
            raise ValueError(f"at most {ctx.max_upload_files} files per upload here; zip them or send fewer")
        user = ctx.user(browser_id, request)
        paths = [getattr(f, "name", f) for f in new_files]
        try:
            dataset_id = studio.add_photos(user, paths, dataset_id)
        except KeyError:  # the set was removed: start a new one
            dataset_id = studio.add_photos(user, paths)
        return report(user, dataset_id, subject_type, res)

    @friendly(4)
    def add_demo(browser_id, subject_type, res, request: gr.Request):
        user = ctx.user(browser_id, request)
        dataset_id = studio.add_demo_photos(user)
        return report(user, dataset_id, subject_type, res)

    @friendly(4)
    def check_again(browser_id, dataset_id, subject_type, res, request: gr.Request):
        if not dataset_id:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return report(ctx.user(browser_id, request), dataset_id, subject_type, res)

    outs = [ctx.dataset, ctx.photo_count, gallery, summary]
    files.upload(upload, [ctx.browser, files, ctx.dataset, subject, resolution], outs, api_name="curate_upload")
    demo_btn.click(add_demo, [ctx.browser, subject, resolution], outs, api_name="curate_demo")
    recheck.click(check_again, [ctx.browser, ctx.dataset, subject, resolution], outs, api_name="curate_check")
    subject.change(check_again, [ctx.browser, ctx.dataset, subject, resolution], outs, api_name="curate_subject")
    clear_btn.click(lambda: (None, 0, [], "New photo set: upload photos.", None), None,
                    [ctx.dataset, ctx.photo_count, gallery, summary, files],
                    api_name="curate_clear")
