"""Where to inpaint: the pure picture geometry of "only masked" inpainting (no model here).

The model repaints a square around the mask at its own resolution, and the result is pasted back
through a feathered mask, so the picture keeps its size and every pixel farther than the feather
from the mask is exactly the input's:

    mask = binary_mask(mask, image.size)              # white (>= 128) = repaint
    alpha = feather(mask, radius)                     # 255 on the mask, fading to 0 `radius` px outside it
    box = square_crop(mask_box(alpha), image.size)    # the square the model sees, with context around the mask
    ... repaint crop(image, box) at the model size, resize back to the box's side ...
    result = paste(image, repainted, alpha, box)

Distances are Chebyshev (a mask grown by r px is the union of (2r+1)-px squares around its pixels).
Boxes are (left, top, right, bottom), right/bottom exclusive, like PIL's.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]

PADDING = 32  # px of context around the mask, at least ...
PADDING_FRACTION = 0.25  # ... or this fraction of the mask's longer side, whichever is more


def binary_mask(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`mask` as L-mode 0/255 (white where >= 128), resized (nearest) to `size` if it differs."""
    mask = mask.convert("L")
    if mask.size != tuple(size):
        mask = mask.resize(tuple(size), Image.Resampling.NEAREST)
    return mask.point(lambda v: 255 if v >= 128 else 0)


def mask_box(mask: Image.Image) -> Box | None:
    """The bounding box of the mask's non-zero pixels, or None for an empty mask."""
    return mask.getbbox()


def feather_radius(image_size: tuple[int, int]) -> int:
    """A few px for small pictures, ~1 % of the longer side for big ones (a softer seam where pixels are small)."""
    return max(4, round(max(image_size) / 100))


def _window_sum(a: np.ndarray, r: int) -> np.ndarray:
    """Sum over the (2r+1)x(2r+1) square around each pixel, edges extended; exact for integer input."""
    if r <= 0:
        return a.astype(np.int64)
    padded = np.pad(a.astype(np.int64), r, mode="edge")
    for axis in (0, 1):
        c = np.cumsum(padded, axis=axis)
        c = np.concatenate([np.zeros_like(c.take([0], axis=axis)), c], axis=axis)
        n = c.shape[axis]
        padded = c.take(range(2 * r + 1, n), axis=axis) - c.take(range(0, n - 2 * r - 1), axis=axis)
    return padded


def feather(mask: Image.Image, radius: int) -> Image.Image:
    """An L-mode alpha: 255 on every mask pixel, 0 on every pixel farther than `radius` from the mask, a ramp between.

    The mask is grown by ceil(radius/2) and then box-blurred by floor(radius/2), so the blur never eats into the mask.
    """
    on = np.asarray(mask.convert("L")) >= 128
    alpha = np.zeros(on.shape, np.uint8)
    box = Image.fromarray(on).getbbox()
    if box is None:
        return Image.fromarray(alpha, "L")
    # work on the mask's box plus a margin the ramp cannot reach (edges extended only at the picture's own edges)
    margin = max(radius, 0) + 1
    x0, y0 = max(box[0] - margin, 0), max(box[1] - margin, 0)
    x1, y1 = min(box[2] + margin, on.shape[1]), min(box[3] + margin, on.shape[0])
    part = on[y0:y1, x0:x1]
    if radius <= 0:
        ramp = part * 255.0
    else:
        grow, blur = radius - radius // 2, radius // 2
        grown = _window_sum(part, grow) > 0
        ramp = _window_sum(grown, blur) * 255.0 / (2 * blur + 1) ** 2
    alpha[y0:y1, x0:x1] = np.rint(ramp).astype(np.uint8)
    return Image.fromarray(alpha, "L")


def _place(lo: int, hi: int, side: int, extent: int) -> int:
    """Start of a `side`-long span centred on [lo, hi), shifted to lie inside [0, extent) when it fits."""
    start = (lo + hi - side) // 2
    if side <= extent:
        return min(max(start, 0), extent - side)
    return (extent - side) // 2  # wider than the picture: centred on it, the overhang split between both sides


def square_crop(box: Box, image_size: tuple[int, int], padding: int = PADDING,
                fraction: float = PADDING_FRACTION) -> Box:
    """A square around `box`, grown by max(padding, fraction x its longer side) on each side, kept inside the picture.

    The square is shifted (not shrunk) to stay inside; only when it is wider than the picture's shorter side is it
    shrunk, to that side but never below the box itself, and never beyond the picture's longer side (a picture
    smaller than the square is worked on whole). If the box is longer than the picture's shorter side, the square
    overhangs it there (see `crop`).
    """
    left, top, right, bottom = box
    width, height = image_size
    longest = max(right - left, bottom - top)
    side = longest + 2 * max(padding, math.ceil(fraction * longest))
    side = min(side, max(longest, min(width, height)))
    x, y = _place(left, right, side, width), _place(top, bottom, side, height)
    return x, y, x + side, y + side


def crop(image: Image.Image, box: Box) -> Image.Image:
    """The `box` of `image`; where the box overhangs the picture, its edge pixels are repeated (not black)."""
    left, top, right, bottom = box
    if left >= 0 and top >= 0 and right <= image.width and bottom <= image.height:
        return image.crop(box)
    pixels = np.asarray(image)
    ys = np.clip(np.arange(top, bottom), 0, image.height - 1)
    xs = np.clip(np.arange(left, right), 0, image.width - 1)
    return Image.fromarray(pixels[ys][:, xs], image.mode)


def paste(original: Image.Image, repainted: Image.Image, alpha: Image.Image, box: Box) -> Image.Image:
    """`original` with `repainted` (the `box`, resized to the box's size) blended in through `alpha` (full-size, L).

    A new image of the original's size and mode; where alpha is 0 the pixels are exactly the original's.
    """
    left, top, right, bottom = box
    if repainted.size != (right - left, bottom - top):
        raise ValueError(f"repainted is {repainted.size}, the box is {right - left}x{bottom - top}")
    if alpha.size != original.size:
        raise ValueError(f"alpha is {alpha.size}, the picture is {original.size}")
    # the part of the box inside the picture
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(right, original.width), min(bottom, original.height)
    result = original.copy()
    if x0 >= x1 or y0 >= y1:
        return result
    inside = (x0, y0, x1, y1)
    before = np.asarray(original.crop(inside)).astype(np.float64)
    after = repainted.convert(original.mode).crop((x0 - left, y0 - top, x1 - left, y1 - top))
    after = np.asarray(after).astype(np.float64)
    weight = np.asarray(alpha.convert("L").crop(inside)).astype(np.float64) / 255.0
    if before.ndim == 3:
        weight = weight[..., None]
    blended = np.rint(before + (after - before) * weight)
    blended = np.where(weight > 0, blended, before)  # untouched pixels stay bit-exact
    result.paste(Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8), original.mode), inside)
    return result
