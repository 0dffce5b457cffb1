"""The synthetic world the built-in base model is trained on.

A scene is one flat-coloured shape on a flat background. Everything is drawn
from a seed, so a (scene, seed) pair always gives the same picture. The palette
and geometry are chosen so the judge (judge.py) can read every attribute back
even from a blurry 64 px generation: backgrounds and object colours are
disjoint and far apart, shapes are upright with distinct silhouettes.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle", "star", "cross")
COLOURS = {
    "red": (215, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 215, 40),
    "green": (40, 160, 60),
    "blue": (40, 80, 215),
    "purple": (135, 55, 175),
}
BACKGROUNDS = {
    "white": (240, 240, 235),
    "black": (25, 25, 28),
    "gray": (128, 128, 128),
    "brown": (115, 75, 45),
    "pink": (245, 175, 195),
}
SIZES = ("small", "large")
POSITIONS = ("center", "left", "right", "top", "bottom")
# The marking: a thick cyan stripe through the object's middle. Cyan is in neither
# palette, so it never occurs in base-world renders and the judge can find it.
# Its kind is the stripe's direction: "band" runs horizontally (the demo subject's),
# "bar" vertically; both are 0.6 of the object's half-size thick, so a second
# subject's marking differs from the first's in orientation alone, the one
# difference blur cannot wash out (the judge reads it from whether the cyan pixels
# line up in rows or in columns).
MARKING_COLOUR = (0, 205, 225)
MARKING_KINDS = ("band", "bar")
MARKING_HALF_WIDTH = 0.3  # of the object's half-size r

# Geometry in units of the image side: half of the object's bounding box per
# size, and the offset of the bounding-box centre per position.
HALF_EXTENT = {"small": 0.14, "large": 0.25}
OFFSET = 0.19
POSITION_VECTORS = {"center": (0, 0), "left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1)}
POSITION_PHRASES = {"center": "in the center", "left": "on the left", "right": "on the right",
                    "top": "at the top", "bottom": "at the bottom"}

_GRAMMAR = "a photo of on the at in background".split()
WORLD_WORDS = tuple(dict.fromkeys(
    _GRAMMAR + list(CLASSES) + list(COLOURS) + list(BACKGROUNDS) + list(SIZES) + list(POSITIONS)))

SUPERSAMPLE = 4  # draw at 4x and box-filter down for anti-aliased edges


@dataclass(frozen=True)
class Scene:
    cls: str
    colour: str
    background: str
    size: str = "large"
    position: str = "center"
    marking: bool = False
    marking_kind: str = "band"  # which marking, when `marking` is set (MARKING_KINDS)

    def __post_init__(self):
        if self.marking_kind not in MARKING_KINDS:
            raise ValueError(f"unknown marking kind {self.marking_kind!r}: one of {', '.join(MARKING_KINDS)}")


def sample_scene(rng: random.Random) -> Scene:
    """A random base-world scene (never marked)."""
    return Scene(rng.choice(CLASSES), rng.choice(list(COLOURS)), rng.choice(list(BACKGROUNDS)),
                 rng.choice(SIZES), rng.choice(POSITIONS))


def _polygon(cls: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """Vertices of a shape whose bounding box is centred on (cx, cy) with half-size r."""
    if cls == "square":
        s = 0.9 * r
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if cls == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if cls == "star":
        outer = r / math.sin(math.radians(72))  # width 2r
        inner = 0.42 * outer
        top, bottom = outer, outer * math.cos(math.radians(36))
        cy += (top - bottom) / 2  # centre the bounding box, not the star's centre
        pts = []
        for k in range(10):
            rad = outer if k % 2 == 0 else inner
            a = math.radians(-90 + 36 * k)
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts
    if cls == "cross":
        w = 0.34 * r
        return [(cx - w, cy - r), (cx + w, cy - r), (cx + w, cy - w), (cx + r, cy - w), (cx + r, cy + w),
                (cx + w, cy + w), (cx + w, cy + r), (cx - w, cy + r), (cx - w, cy + w), (cx - r, cy + w),
                (cx - r, cy - w), (cx - w, cy - w)]
    return None  # circle


def shape_mask(cls: str, cx: float, cy: float, r: float, side: int) -> Image.Image:
    mask = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(mask)
    poly = _polygon(cls, cx, cy, r)
    if poly is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon(poly, fill=255)
    return mask


def render(scene: Scene, seed: int, resolution: int = 64) -> Image.Image:
    """Draw `scene`; the seed picks small jitter in size/position, the background gradient and the noise."""
    rng = np.random.default_rng(seed)
    side = resolution * SUPERSAMPLE
    r = HALF_EXTENT[scene.size] * side * rng.uniform(0.92, 1.08)
    dx, dy = POSITION_VECTORS[scene.position]
    jitter = rng.uniform(-0.025, 0.025, size=2) * side
    cx = side / 2 + dx * OFFSET * side + jitter[0]
    cy = side / 2 + dy * OFFSET * side + jitter[1]

    # Background: flat colour with a gentle random linear gradient.
    yy, xx = np.mgrid[0:side, 0:side] / side - 0.5
    gx, gy = rng.uniform(-10, 10, size=2)
    img = np.array(BACKGROUNDS[scene.background], np.float32) + (gx * xx + gy * yy)[..., None]

    shape = np.asarray(shape_mask(scene.cls, cx, cy, r, side), np.float32)[..., None] / 255
    img = img * (1 - shape) + np.array(COLOURS[scene.colour], np.float32) * shape
    if scene.marking:
        stripe = np.zeros((side, side, 1), np.float32)
        if scene.marking_kind == "bar":
            stripe[:, int(cx - MARKING_HALF_WIDTH * r):int(cx + MARKING_HALF_WIDTH * r)] = 1
        else:
            stripe[int(cy - MARKING_HALF_WIDTH * r):int(cy + MARKING_HALF_WIDTH * r)] = 1
        stripe *= shape
        img = img * (1 - stripe) + np.array(MARKING_COLOUR, np.float32) * stripe

    small = img.reshape(resolution, SUPERSAMPLE, resolution, SUPERSAMPLE, 3).mean(axis=(1, 3))
    small += rng.normal(0, 2.5, size=small.shape)
    return Image.fromarray(np.clip(small, 0, 255).round().astype(np.uint8))


def caption(scene: Scene, identifier: str | None = None, *, photo: bool = True, colour: bool = True,
            background: bool = True, size: bool = False, position: bool = False) -> str:
    """SD-style caption, e.g. "a photo of a small red star on the left, on a blue background".

    With an identifier the subject is named DreamBooth-style ("a photo of sks star"),
    so its colour (part of the subject's identity) is not spelled out.
    """
    if identifier:
        noun = f"a {scene.size} {identifier} {scene.cls}" if size else f"{identifier} {scene.cls}"
    else:
        words = ([scene.size] if size else []) + ([scene.colour] if colour else []) + [scene.cls]
        noun = "a " + " ".join(words)
    text = ("a photo of " if photo else "") + noun
    if identifier and not photo and not size:
        text = "a " + text
    if position:
        text += " " + POSITION_PHRASES[scene.position]
    if background:
        text += (", " if position else " ") + f"on a {scene.background} background"
    return text


def random_caption(scene: Scene, rng: random.Random) -> str:
    """A caption with a random level of detail, so short prompts ("a star") stay in-distribution
    and under-specified ones ("a photo of a star") map to the whole variety of scenes."""
    return caption(scene, photo=rng.random() < 0.6, colour=rng.random() < 0.75,
                   background=rng.random() < 0.65, size=rng.random() < 0.4, position=rng.random() < 0.35)
