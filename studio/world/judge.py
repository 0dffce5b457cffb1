"""Read a (generated) picture of the synthetic world back into a scene description.

Classical, deterministic image analysis, tolerant of the blur, noise and colour
drift of images from the tiny base model:
  background = median colour of the border, nearest background palette entry;
  object     = largest blob of pixels far from that colour (adaptive threshold);
  class      = best normalised correlation between the object's soft silhouette
               and each class's rendered template (searched over scale, blur, shift);
  colour     = majority vote of the object pixels' nearest palette colours (in Lab);
  size       = bounding-box side; position = bounding-box centre;
  marking    = share of object pixels with the marking's cyan colour;
  marking_kind = the stripe's direction: the marked pixels line up in rows (a horizontal
               band) or in columns (a vertical bar).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
from PIL import Image

from studio.world.render import BACKGROUNDS, CLASSES, COLOURS, HALF_EXTENT, MARKING_COLOUR, OFFSET, Scene, shape_mask

UPSAMPLE = 4  # silhouettes are analysed on a 4x bilinear upsampling: sub-pixel accuracy
# Template matching tries these scale factors and blurs (in upsampled pixels), so a
# blurry generation, whose blob is rounder and a little smaller, still finds its class.
SCALES = (0.9, 1.0, 1.12)
BLURS = (0.0, 4.0, 7.0)
SHIFT = 6  # translation search radius, upsampled pixels
BBOX_HALF = {"square": 0.9}  # bounding-box half-side per unit radius in render.shape_mask (default 1)
MARKING_MIN_SHARE = 0.06


@dataclass
class Verdict:
    cls: str | None
    colour: str | None
    background: str | None
    size: str | None
    position: str | None
    marking: bool
    marking_share: float = 0.0
    class_score: float = 0.0  # normalised correlation of the object with the chosen class's template
    marking_kind: str | None = None  # "band" or "bar" (render.MARKING_KINDS) when `marking`, else None

    def as_dict(self) -> dict:
        return asdict(self)

    def agrees(self, scene: Scene, fields=("cls", "colour", "background")) -> bool:
        return all(getattr(self, f) == getattr(scene, f) for f in fields)


def _lab(rgb) -> np.ndarray:
    arr = np.asarray(rgb, np.uint8).reshape(-1, 1, 3)
    return cv2.cvtColor(arr, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)


_BG_NAMES, _BG_LAB = list(BACKGROUNDS), _lab(list(BACKGROUNDS.values()))
_OBJ_NAMES, _OBJ_LAB = list(COLOURS), _lab(list(COLOURS.values()))
_VOTE_LAB = np.concatenate([_OBJ_LAB, _lab([MARKING_COLOUR])])  # last row: the marking


def _nearest(lab: np.ndarray, names: list[str], palette: np.ndarray) -> str:
    return names[int(np.argmin(np.linalg.norm(palette - lab, axis=1)))]


def _objectness(img: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(soft silhouette in [0, 1], mask of its largest blob), both upsampled; None if no object."""
    dist = np.linalg.norm(img.astype(np.float32) - bg, axis=2)
    if np.percentile(dist, 99.5) < 35:
        return None
    # Contrast = typical distance of object pixels; the median ignores a marking of
    # another contrast that would otherwise set the scale.
    contrast = float(np.median(dist[dist > 0.3 * np.percentile(dist, 99.5)]))
    soft = np.clip(cv2.resize(dist, None, fx=UPSAMPLE, fy=UPSAMPLE, interpolation=cv2.INTER_LINEAR) / contrast, 0, 1)
    mask = (soft > max(0.5, 25.0 / contrast)).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    if n < 2:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[best, cv2.CC_STAT_AREA] < 20 * UPSAMPLE ** 2:
        return None
    mask = (labels == best).astype(np.uint8)
    return soft * cv2.dilate(mask, np.ones((9, 9), np.uint8)), mask


def _classify(soft: np.ndarray, mask: np.ndarray) -> tuple[str, float]:
    x, y, w, h = cv2.boundingRect(mask)
    cx, cy, half = x + w / 2, y + h / 2, max(w, h) / 2
    scores = {}
    for cls in CLASSES:
        best = -1.0
        for k in SCALES:
            r = half * k / BBOX_HALF.get(cls, 1.0)
            side = int(2 * r) + 16
            tpl0 = np.asarray(shape_mask(cls, side / 2, side / 2, r, side), np.float32) / 255
            # the search window: the template's footprint around the blob, plus SHIFT each way
            x0, y0 = int(round(cx - side / 2)) - SHIFT, int(round(cy - side / 2)) - SHIFT
            win = np.zeros((side + 2 * SHIFT, side + 2 * SHIFT), np.float32)
            sx0, sy0 = max(x0, 0), max(y0, 0)
            sx1, sy1 = min(x0 + win.shape[1], soft.shape[1]), min(y0 + win.shape[0], soft.shape[0])
            win[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = soft[sy0:sy1, sx0:sx1]
            for sigma in BLURS:
                tpl = cv2.GaussianBlur(tpl0, (0, 0), sigma) if sigma else tpl0
                best = max(best, float(cv2.matchTemplate(win, tpl, cv2.TM_CCOEFF_NORMED).max()))
        scores[cls] = best
    cls = max(scores, key=scores.get)
    return cls, scores[cls]


def _marking_kind(marked: np.ndarray) -> str:
    """"bar" if the marked pixels line up in columns more than in rows, else "band".

    Each marked pixel counts the marked pixels in its column and in its row; averaged, these are a stripe's length
    and thickness (a band: its width across the object, then 0.6 of the object's half-size; a bar: the other way
    round), a factor of 1.6 (a band across a triangle's narrow middle) to 3 apart, and blur, which thickens a stripe
    and shortens it alike, does not swap them. Unlike the pixels' spread (std along x and y), this holds where the
    marking comes in pieces: the tiny model's stripe often drifts from cyan to mint, and then only its two edges
    (mint blended with the body) read as cyan, two lines a stripe's thickness apart that together spread as wide as
    tall; and a stripe broken across by noise keeps its rows (or columns). Nothing is taken relative to the object's
    bounding box: every class's box is square, and where the judge's blob is the stripe alone (a red body on gray
    is too faint to join it) that box would cancel the difference.
    """
    along_columns = float((marked.sum(axis=0, dtype=np.int64) ** 2).sum())
    along_rows = float((marked.sum(axis=1, dtype=np.int64) ** 2).sum())
    return "bar" if along_columns > along_rows else "band"


def judge(image: Image.Image) -> Verdict:
    img = np.asarray(image.convert("RGB").resize((64, 64), Image.BILINEAR))
    res = img.shape[0]
    border = np.concatenate([img[:2].reshape(-1, 3), img[-2:].reshape(-1, 3),
                             img[:, :2].reshape(-1, 3), img[:, -2:].reshape(-1, 3)])
    bg = np.median(border, axis=0)
    background = _nearest(_lab([bg.round()])[0], _BG_NAMES, _BG_LAB)
    found = _objectness(img, bg)
    if found is None:
        return Verdict(None, None, background, None, None, False)
    soft, mask = found
    cls, class_score = _classify(soft, mask)
    x, y, w, h = (v / UPSAMPLE for v in cv2.boundingRect(mask))
    side = max(w, h) / res
    size = "large" if side > HALF_EXTENT["small"] + HALF_EXTENT["large"] else "small"
    dx, dy = (x + w / 2) / res - 0.5, (y + h / 2) / res - 0.5
    if max(abs(dx), abs(dy)) < OFFSET / 2:
        position = "center"
    elif abs(dx) > abs(dy):
        position = "left" if dx < 0 else "right"
    else:
        position = "top" if dy < 0 else "bottom"

    small = cv2.resize(mask, (res, res), interpolation=cv2.INTER_AREA)
    inner = cv2.erode(small, np.ones((3, 3), np.uint8)) if small.sum() > 40 else small
    region = inner if inner.sum() else small  # 1 px eroded at 64 px: no blended edge pixels
    lab = _lab(img.reshape(-1, 3)).reshape(res, res, 3)
    # Per-pixel vote among the object palette plus the marking colour over the whole
    # blob; pixels far from all of them do not vote, nor do those next to marking
    # pixels (red + cyan blends read as green). The marking share is taken inside.
    dists = np.linalg.norm(lab[..., None, :] - _VOTE_LAB, axis=-1)
    nearest, confident = dists.argmin(axis=-1), (dists.min(axis=-1) < 35) & small.astype(bool)
    marked = confident & (nearest == len(_OBJ_NAMES))
    share = float((marked & region.astype(bool)).sum() / region.sum())
    voters = confident & ~cv2.dilate(marked.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    if voters.sum() < 3:
        voters = confident & ~marked
    votes = np.bincount(nearest[voters], minlength=len(_VOTE_LAB))[:len(_OBJ_NAMES)]
    body = small.astype(bool) & ~marked
    colour = (_OBJ_NAMES[int(votes.argmax())] if votes.sum() >= 3
              else _nearest(np.median(lab[body if body.any() else small.astype(bool)], axis=0), _OBJ_NAMES, _OBJ_LAB))
    marking = share >= MARKING_MIN_SHARE
    kind = _marking_kind(marked) if marking else None
    return Verdict(cls, colour, background, size, position, marking, share, class_score, kind)
