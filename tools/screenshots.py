"""README screenshots: the real app on the built-in model with the demo subject, driven in Debian's chromium.

    python -m tools.screenshots [--steps N] [--out assets/screenshots]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from studio.engine import Studio
from tests.ui.test_app import launch

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=0, help="training steps (0 = the demo recipe's own)")
    parser.add_argument("--out", type=Path, default=Path("assets/screenshots"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as home:
        studio = Studio(Path(home))
        _, presets, overrides = studio.demo_settings()
        args.steps = args.steps or studio.resolve(presets, overrides, num_images=5).config.max_steps
        demo, url = launch(studio)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(url)
                page.locator("#demo-btn").click()
                page.get_by_text("5 of 5 photos accepted").wait_for(timeout=120_000)
                time.sleep(2)
                page.screenshot(path=str(args.out / "curate.png"))
                page.get_by_role("tab", name="2 · Train").click()
                page.get_by_text("Advanced").click()
                steps = page.get_by_role("spinbutton", name="Steps (0 = auto from photos)", exact=True)
                steps.fill(str(args.steps))
                steps.press("Tab")
                page.get_by_role("spinbutton", name="Preview every N steps (0 = 4 per run)", exact=True).fill(str(args.steps // 3))
                # checkpoints to score: the scorecard chart then shows the run learning, and the one kept
                page.get_by_role("spinbutton", name="Checkpoint every N steps (0 = end only)", exact=True).fill(str(args.steps // 3))
                page.get_by_text("Advanced").click()
                time.sleep(1)
                page.locator("#train-start").click()
                page.locator("#train-status").get_by_text("finished in").wait_for(timeout=900_000)
                time.sleep(3)
                page.screenshot(path=str(args.out / "train.png"))
                page.get_by_role("tab", name="3 · Generate").click()
                page.locator("#gen-prompt textarea").fill("a photo of sks star on a black background")
                page.locator("#gen-go").click()
                page.locator("#gen-gallery img").first.wait_for(timeout=120_000)
                time.sleep(2)
                page.screenshot(path=str(args.out / "generate.png"))
                browser.close()
        finally:
            demo.close()
    print(f"screenshots in {args.out}")


if __name__ == "__main__":
    main()
