"""Labelled image grids: compare results (prompts x models) and preview histories (steps x prompts)."""
from __future__ import annotations

import textwrap

from PIL import Image, ImageDraw, ImageFont


_BG = (250, 250, 250)
_INK = (30, 30, 30)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # very old Pillow
        return ImageFont.load_default()


def labelled_grid(rows: list[list[Image.Image]], row_labels: list[str], col_labels: list[str], *, cell: int | None = None) -> Image.Image:
    """A table of images with a label per row (left) and per column (top)."""
    if not rows or not rows[0]:
        raise ValueError("a grid needs at least one image")
    cell = cell or max(128, rows[0][0].width)
    font = _font(max(11, cell // 12))
    wrap = max(8, cell // 7)
    head = 8 + 14 * max(len(textwrap.wrap(c, wrap)) or 1 for c in col_labels) if col_labels else 0
    side = min(220, 12 + max((len(r) for r in row_labels), default=0) * 7) if row_labels else 0
    grid = Image.new("RGB", (side + cell * len(rows[0]), head + cell * len(rows)), _BG)
    draw = ImageDraw.Draw(grid)
    for c, label in enumerate(col_labels):
        draw.multiline_text((side + c * cell + 4, 4), "\n".join(textwrap.wrap(label, wrap)), fill=_INK, font=font)
    for r, (row, label) in enumerate(zip(rows, row_labels or [""] * len(rows))):
        draw.multiline_text((4, head + r * cell + cell // 2 - 7), "\n".join(textwrap.wrap(label, 28)), fill=_INK, font=font)
        for c, image in enumerate(row):
            grid.paste(image.convert("RGB").resize((cell, cell), Image.Resampling.NEAREST if image.width < cell else Image.Resampling.LANCZOS),
                       (side + c * cell, head + r * cell))
    return grid


def preview_grid(run, max_rows: int = 6) -> Image.Image | None:
    """Steps down, prompt/seed pairs across, from a `RunFolder`'s preview events (None before the first preview)."""
    previews = [e for e in run.read_events() if e.kind == "preview"]
    if not previews:
        return None
    if len(previews) > max_rows:  # keep the first (base model) and the latest ones
        previews = [previews[0]] + previews[-(max_rows - 1):]
    cols = [f"{p} (seed {s})" for p, s in zip(previews[-1].prompts, previews[-1].seeds)]
    rows, labels = [], []
    for event in previews:
        images = [Image.open(run.path / rel) for rel in event.images]
        if len(images) == len(cols):
            rows.append(images)
            labels.append("base model" if event.step == 0 else f"step {event.step}")
    return labelled_grid(rows, labels, cols) if rows else None
