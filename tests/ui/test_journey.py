"""A new user's whole journey in Debian's chromium, on the built-in model with the demo subject:
demo -> start -> stop -> resume to the end (a reload in the middle), the downloads opened by diffusers, a grid after
training, a run deleted after a confirmation, inpainting at 256 px, and the page at a phone's width.

Screenshots land in test-artifacts/screenshots/. Skipped only when /usr/bin/chromium is absent.
"""
from __future__ import annotations

import io
import re
import time
import urllib.request
import zipfile

import numpy as np
import pytest
from PIL import Image

from tests.ui.test_browser import CHROMIUM, SHOTS, browser_page, open_in_inpaint_editor

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent (apt-get install chromium)")
STEPS = 40  # the demo recipe, shortened so the whole journey takes about two minutes


def text_of(page, selector: str) -> str:
    return page.locator(selector).first.inner_text()


def wait_text(page, selector: str, pattern: str, timeout: float = 120) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = text_of(page, selector)
        if re.search(pattern, text):
            return text
        time.sleep(0.3)
    raise AssertionError(f"{selector} never matched {pattern!r}; it says: {text_of(page, selector)!r}")


def fetch(url: str, href: str) -> bytes:
    with urllib.request.urlopen(href if href.startswith("http") else url.rstrip("/") + href, timeout=30) as response:
        return response.read()


def test_a_new_users_journey(tmp_path):
    from studio.engine import Studio

    SHOTS.mkdir(parents=True, exist_ok=True)
    studio = Studio(root=tmp_path / "home")  # the built-in model, as `python app.py` starts
    with browser_page(studio) as (page, url):
        # -- the demo subject, and a settings table that tells the truth about it
        page.locator("#demo-btn").click()
        page.get_by_text("5 of 5 photos accepted").wait_for(timeout=60_000)
        assert "blurry" not in text_of(page, "#curate-summary")  # the studio's own photos pass clean
        # a refused crop is a message, and every field keeps what it had (no "Error" badges left behind)
        page.wait_for_function("() => document.querySelector('#curate-crop-right input').value === '64'",
                               timeout=30_000)  # the demo's first photo is picked, with its automatic crop
        page.locator("#curate-crop-right input").fill("60")
        page.locator("#curate-save-crop").click()
        page.get_by_text("square").first.wait_for(timeout=20_000)
        time.sleep(1.0)
        assert "Error" not in text_of(page, "#curate-edit") and "Error" not in text_of(page, "#curate-gallery")
        assert page.locator("#curate-crop-right input").input_value() == "60"  # what the user typed is still there
        page.get_by_role("tab", name="2 · Train").click()
        table = wait_text(page, "#resolved-config", r"Preset demo-full")
        assert "set by you" not in table and re.search(r"class_noun\s+star\s+preset demo-full", table)  # the preset's
        assert page.get_by_role("radio", name="Full fine-tune").is_checked()
        page.get_by_text("Advanced").click()
        for label, value in (("Steps (0 = auto from photos)", str(STEPS)), ("Class images", "4"),
                             ("Preview every N steps (0 = 4 per run)", str(STEPS // 2))):
            field = page.get_by_role("spinbutton", name=label, exact=True)
            field.fill(value)
            field.press("Tab")
        page.get_by_label("Extra settings (TOML `key = value` lines)").fill(
            # every preview at its cadence (a budget would skip the middle one): the run lasts long enough to Stop
            "class_image_steps = 4\npreview_steps = 4\npreview_seeds = [0]\npreview_budget = 1.0")
        wait_text(page, "#resolved-config", rf"max_steps\s+{STEPS}\s+set by you")

        # -- start, stop: Stop says what it kept; Resume continues from it to the end
        page.locator("#train-start").click()
        _wait_progress(page, 1)  # the page hears of a step every 2 s: stop at the first sign of training
        page.locator("#train-stop").click()
        status = wait_text(page, "#train-status", r"checkpoint step-\d{6} kept", 60)
        assert "Resume" in status and "cancelled" in status
        stopped_at = int(re.search(r"stopped at step (\d+)", status).group(1))
        page.wait_for_function("() => !document.querySelector('#train-resume').disabled", timeout=10_000)
        assert page.locator("#train-pause").is_disabled()
        page.screenshot(path=str(SHOTS / "journey-1-stopped.png"), full_page=True)
        page.locator("#train-resume").click()
        wait_text(page, "#train-status", r"running|queued", 30)

        # -- a reload in the middle of the run: photos, settings and the run are all still there
        page.reload()
        page.get_by_text("5 of 5 photos accepted").wait_for(timeout=60_000)
        page.get_by_role("tab", name="2 · Train").click()
        page.wait_for_function("() => document.querySelector('#class-noun textarea, #class-noun input').value === 'star'",
                               timeout=20_000)
        page.get_by_text("Advanced").click()
        assert page.get_by_role("spinbutton", name="Steps (0 = auto from photos)", exact=True).input_value() == str(STEPS)
        wait_text(page, "#train-status", r"✓ finished", 240)
        assert f"step {STEPS}/{STEPS}" in page.locator("#train-progress textarea, #train-progress input").first.input_value()
        run_id = studio.runs("local")[0].run_id
        started = [e for e in studio.events("local", run_id)[0] if e.kind == "started"]
        assert started[-1].resumed_from == stopped_at  # resumed, not started again
        wait_text(page, "#score-plot", "subject fidelity", 30)  # the scorecard chart, drawn with its series
        page.screenshot(path=str(SHOTS / "journey-2-finished.png"), full_page=True)

        # -- the scorecard's pick overruled with one click: the other checkpoint becomes the run's output
        page.wait_for_function("() => !document.querySelector('#train-use').disabled", timeout=10_000)
        keep = page.locator("#train-keep input")
        target = "the last step" if keep.input_value().startswith("step") else f"step {stopped_at}"
        keep.click()
        page.get_by_role("option", name=re.compile("^" + re.escape(target))).click()
        page.locator("#train-use").click()
        page.get_by_text(re.compile(r"(step \d+|the last step)'s files are the output")).first.wait_for(timeout=60_000)
        notices = [e.message for e in studio.events("local", run_id)[0] if e.kind == "notice"]
        assert notices[-1].startswith("output switched to") and "chosen by you" in notices[-1]

        # -- the downloads: each says what it is for; the zip opens in diffusers
        page.get_by_role("tab", name="5 · Runs").click()
        help_text = wait_text(page, "#runs-downloads-help", r"sks-star-diffusers\.zip", 30)
        assert re.search(r"Scorecard.*subject fidelity", text_of(page, "#runs-settings"), re.S)  # the run's scorecard
        assert "for diffusers" in help_text and "A1111" not in help_text.split("sks-star-diffusers.zip")[0][-5:]
        href = next(a.get_attribute("href") for a in page.locator("#runs-downloads a").all()
                    if "sks-star-diffusers.zip" in (a.get_attribute("href") or ""))
        with zipfile.ZipFile(io.BytesIO(fetch(url, href))) as archive:
            archive.extractall(tmp_path / "download")
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "download" / "sks-star-diffusers")
        assert pipe("a photo of sks star", num_inference_steps=2, output_type="np").images[0].shape == (64, 64, 3)

        # -- a grid after training: the new run is listed, and typed prompts survive a list refresh
        page.get_by_role("tab", name="3 · Generate").click()
        page.get_by_text("Side by side: prompts x models x seeds").click()
        prompts = page.locator("#compare-prompts textarea")
        prompts.fill("a photo of sks star on a black background\na photo of a star")
        page.get_by_role("tab", name="5 · Runs").click()
        time.sleep(2.0)  # opening the tab refreshes the list and the picked run's details, its name field included
        page.locator("#runs-name textarea, #runs-name input").first.fill("my demo star")
        page.locator("#runs-rename").click()  # a change to the runs: every list refreshes
        wait_text(page, "#runs-table", "my demo star", 30)
        page.get_by_role("tab", name="3 · Generate").click()
        page.locator("#compare-models").get_by_text("my demo star").first.wait_for(timeout=20_000)
        assert prompts.input_value() == "a photo of sks star on a black background\na photo of a star"
        page.locator("#compare-go").click()
        page.locator("#compare-grid img").first.wait_for(timeout=60_000)
        page.screenshot(path=str(SHOTS / "journey-3-grid.png"), full_page=True)

        # -- inpaint at 256 px: the result has the picture's size, and outside the mask nothing changed
        picture = tmp_path / "room.png"
        pixels = np.full((256, 256, 3), 200, np.uint8)
        pixels[20:80, 160:240] = (40, 80, 215)  # a blue block far from the painted stroke
        Image.fromarray(pixels).save(picture)
        box = open_in_inpaint_editor(page, picture)
        x, y = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.75
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 30, y, steps=4)
        page.mouse.up()
        page.locator("#inpaint-go").click()
        page.locator("#inpaint-result img").first.wait_for(timeout=60_000)
        result = Image.open(io.BytesIO(fetch(url, page.locator("#inpaint-result img").first.get_attribute("src")))).convert("RGB")
        assert result.size == (256, 256)
        assert np.array_equal(np.asarray(result)[20:80, 160:240], pixels[20:80, 160:240])  # untouched, bit for bit
        page.screenshot(path=str(SHOTS / "journey-4-inpaint.png"), full_page=True)

        # -- delete: a confirmation that names the run, and no jump to another run afterwards
        page.get_by_role("tab", name="5 · Runs").click()
        page.locator("#runs-delete").click()
        wait_text(page, "#runs-confirm-question", r"Delete my demo star", 20)
        page.locator("#runs-delete-no").click()
        assert studio.runs("local")  # "Keep it" kept it
        page.locator("#runs-delete").click()
        page.locator("#runs-delete-yes").click()
        page.get_by_text(f"deleted {run_id}").wait_for(timeout=20_000)
        assert studio.runs("local") == []
        assert page.locator("#runs-picker input").input_value() == ""

        # -- a phone's width: every tab reachable without a hidden menu
        page.set_viewport_size({"width": 400, "height": 800})
        page.get_by_role("tab", name="1 · Curate").click()
        time.sleep(1.0)
        page.screenshot(path=str(SHOTS / "journey-5-phone.png"), full_page=True)
        for name in ("1 · Curate", "2 · Train", "3 · Generate", "4 · Inpaint", "5 · Runs"):
            assert page.get_by_role("tab", name=name).is_visible(), f"tab {name} is hidden at 400 px"


def _wait_progress(page, at_least: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    field = page.locator("#train-progress textarea, #train-progress input").first
    while time.time() < deadline:
        found = re.search(r"step (\d+)/", field.input_value())
        if found and int(found.group(1)) >= at_least:
            return
        time.sleep(0.2)
    raise AssertionError(f"training never reached step {at_least}: {field.input_value()!r}")
