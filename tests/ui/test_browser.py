"""The real page in Debian's chromium (Playwright): upload, train, watch the loss chart and previews, paint a mask, inpaint.

Screenshots land in test-artifacts/screenshots/. Skipped only when /usr/bin/chromium is absent.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install chromium)")

from tests.ui.test_app import launch, make_photos  # noqa: E402


@contextmanager
def browser_page(studio):
    """`studio`'s app, served on a local port as `python app.py` serves it, and a chromium page opened on it."""
    sync_api = pytest.importorskip("playwright.sync_api")
    demo, url = launch(studio)
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM),
                                        args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            try:
                yield page, url
            finally:
                browser.close()
    finally:
        demo.close()


@contextmanager
def app_page(tmp_path):
    """The app on a tiny model, and a chromium page opened on it."""
    from studio.engine import Studio
    from tests.tiny import build_tiny_sd

    with browser_page(Studio(root=tmp_path / "home", base_model=str(build_tiny_sd(tmp_path / "tiny")))) as (page, _):
        yield page


def test_page_flow(tmp_path):
    SHOTS.mkdir(parents=True, exist_ok=True)
    photos = [str(p) for p in make_photos(tmp_path / "photos")]
    picture = tmp_path / "picture.png"
    Image.new("RGB", (128, 128), (40, 120, 200)).save(picture)
    with app_page(tmp_path) as page:
        page.get_by_text("Upload 3-20 photos").wait_for(timeout=30_000)

        # 1 Curate
        page.locator("#photo-upload input[type=file]").set_input_files(photos)
        page.get_by_text("3 of 4 photos accepted").wait_for(timeout=60_000)
        page.screenshot(path=str(SHOTS / "1-curate.png"), full_page=True)

        # 2 Train: short run via the Advanced accordion
        page.get_by_role("tab", name="2 · Train").click()
        page.locator("#class-noun textarea, #class-noun input").first.fill("dog")
        page.get_by_text("Advanced").click()
        for label, value in (("Steps (0 = auto from photos)", "4"), ("Class images", "2"), ("Resolution (0 = model's)", "32"),
                             ("Preview every N steps (0 = 4 per run)", "2")):
            field = page.get_by_role("spinbutton", name=label, exact=True)
            field.fill(value)
            field.press("Tab")
        page.get_by_label("Extra settings (TOML `key = value` lines)").fill(
            "preview_steps = 2\npreview_seeds = [0]\nclass_image_steps = 1")
        page.locator("#resolved-config").get_by_text("set by you").first.wait_for(timeout=20_000)
        page.locator("#train-start").click()
        page.locator("#train-status").get_by_text("✓ finished").wait_for(timeout=150_000)
        page.locator("#preview-gallery img").first.wait_for(timeout=20_000)
        page.locator("#loss-plot canvas, #loss-plot svg").first.wait_for(timeout=20_000)
        time.sleep(1.5)
        page.screenshot(path=str(SHOTS / "2-train.png"), full_page=True)

        # 3 Generate with the trained model
        page.get_by_role("tab", name="3 · Generate").click()
        # the run just trained is what the user comes to try: it replaces the default base model
        page.wait_for_function("() => !document.querySelector('#gen-model input').value.startsWith('base model')",
                               timeout=20_000)
        page.locator("#gen-go").click()
        page.locator("#gen-gallery img").first.wait_for(timeout=60_000)
        page.screenshot(path=str(SHOTS / "3-generate.png"), full_page=True)

        # 4 Inpaint: upload a picture into the editor, paint a stroke, inpaint
        box = open_in_inpaint_editor(page, picture)
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(cx - 40, cy - 20)
        page.mouse.down()
        for dx in range(-40, 41, 8):
            page.mouse.move(cx + dx, cy - 20 + abs(dx) // 2, steps=2)
        page.mouse.up()
        page.screenshot(path=str(SHOTS / "4-inpaint-mask.png"), full_page=True)
        page.locator("#inpaint-go").click()
        page.locator("#inpaint-result img").first.wait_for(timeout=60_000)
        page.screenshot(path=str(SHOTS / "4-inpaint.png"), full_page=True)

        # 5 Runs
        page.get_by_role("tab", name="5 · Runs").click()
        page.get_by_role("button", name="Refresh").click()
        page.get_by_text("✓ finished").last.wait_for(timeout=30_000)  # the picked run's status
        time.sleep(2)
        page.screenshot(path=str(SHOTS / "5-runs.png"), full_page=True)
        assert "safetensors" in page.locator("#runs-downloads").inner_text()


def open_in_inpaint_editor(page, picture: Path) -> dict:
    """Open the Inpaint tab, put `picture` in its editor, pick the brush; returns the canvas's box on the page."""
    page.get_by_role("tab", name="4 · Inpaint").click()
    canvas = page.locator("#inpaint-editor canvas").first
    canvas.wait_for(timeout=20_000)
    placeholder = page.locator("#inpaint-editor").get_by_text("Upload an image")
    for attempt in range(3):  # an editor still mounting on a busy machine may miss the first file
        page.locator("#inpaint-editor input[type=file]").first.set_input_files(str(picture))
        try:  # painting before the picture is in would paint on the editor's own blank 800 x 800 canvas
            placeholder.wait_for(state="hidden", timeout=15_000)
            break
        except Exception:
            if attempt == 2:
                raise
    time.sleep(1.0)
    brush = page.locator("#inpaint-editor").get_by_role("button", name="Brush")
    if brush.count():
        brush.first.click()
    return canvas.bounding_box()


def test_demo_button_fills_the_demo_recipe(tmp_path):
    """One click on "Try the demo subject" loads its photos (with captions) and the demo-full recipe, method included."""
    with app_page(tmp_path) as page:
        page.locator("#demo-btn").click()
        page.get_by_text("5 of 5 photos accepted").wait_for(timeout=60_000)
        page.get_by_role("tab", name="2 · Train").click()
        page.get_by_text("Advanced").click()
        steps = page.get_by_role("spinbutton", name="Steps (0 = auto from photos)", exact=True)
        page.wait_for_function("el => el.value === '600'", arg=steps.element_handle(), timeout=20_000)
        assert page.get_by_role("radio", name="Full fine-tune").is_checked()  # not undone by a preset refill
        time.sleep(1.0)  # a refill from a method change would land here
        assert steps.input_value() == "600"
        assert page.locator("#class-noun textarea, #class-noun input").first.input_value() == "star"
