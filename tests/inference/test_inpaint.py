"""Inpainting keeps the picture: "only masked" geometry (no model) and the built-in model end to end."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from studio.inference import inpaint_region as region


def square_mask(size, box) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def grown(mask: Image.Image, r: int) -> np.ndarray:
    """The mask grown by r px (Chebyshev), by brute force."""
    on = np.asarray(mask) >= 128
    out = np.zeros_like(on)
    h, w = on.shape
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            src = on[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
            out[max(dy, 0):h - max(-dy, 0), max(dx, 0):w - max(-dx, 0)] |= src
    return out


# --- geometry ---------------------------------------------------------------------------------------------------

def test_binary_mask_thresholds_and_resizes_nearest():
    mask = Image.new("L", (8, 8), 0)
    mask.paste(127, (0, 0, 4, 8))
    mask.paste(200, (4, 0, 8, 8))
    out = region.binary_mask(mask, (16, 16))
    assert out.size == (16, 16) and out.mode == "L"
    pixels = np.asarray(out)
    assert set(np.unique(pixels)) == {0, 255}
    assert (pixels[:, :8] == 0).all() and (pixels[:, 8:] == 255).all()
    assert region.mask_box(region.binary_mask(Image.new("RGB", (8, 8)), (8, 8))) is None


def test_square_crop_pads_squares_and_shifts_inside():
    # centred: box 40 px, padding max(32, 10) -> side 104, centred on the box
    assert region.square_crop((100, 100, 140, 140), (256, 256)) == (68, 68, 172, 172)
    # a rectangle becomes a square on its longer side
    left, top, right, bottom = region.square_crop((100, 110, 140, 130), (256, 256))
    assert right - left == bottom - top == 104 and left <= 100 and right >= 140 and top <= 110 and bottom >= 130
    # near a corner: shifted inside, not shrunk
    assert region.square_crop((0, 0, 20, 20), (256, 256)) == (0, 0, 84, 84)
    assert region.square_crop((240, 236, 256, 256), (256, 256)) == (172, 172, 256, 256)
    # big boxes get a fractional padding: 200 px -> 50 px each side
    assert region.square_crop((300, 300, 500, 500), (1000, 1000)) == (250, 250, 550, 550)


def test_square_crop_on_small_or_narrow_pictures():
    # picture smaller than the padded square: the whole picture
    assert region.square_crop((20, 20, 30, 30), (48, 48)) == (0, 0, 48, 48)
    # landscape: the padding shrinks to the picture's height, the square slides along the width
    assert region.square_crop((150, 10, 190, 50), (400, 60)) == (140, 0, 200, 60)
    # a box longer than the picture's height: a square that overhangs top and bottom equally
    assert region.square_crop((10, 0, 110, 40), (400, 60)) == (10, -20, 110, 80)


@pytest.mark.parametrize("radius", [1, 2, 3, 4, 7])
def test_feather_is_full_on_the_mask_and_zero_beyond_the_radius(radius):
    mask = square_mask((64, 48), (20, 10, 40, 30))
    ImageDraw.Draw(mask).line([(0, 47), (63, 40)], fill=255)  # a thin stroke touching the picture's edges
    alpha = np.asarray(region.feather(mask, radius))
    on = np.asarray(mask) == 255
    assert (alpha[on] == 255).all()
    assert (alpha[~grown(mask, radius)] == 0).all()
    ring = grown(mask, radius) & ~on
    assert (alpha[ring] > 0).all()
    if radius > 1:
        assert (alpha[ring] < 255).any()  # a ramp, not a hard edge
    assert (np.asarray(region.feather(Image.new("L", (9, 9)), radius)) == 0).all()


def test_crop_repeats_edges_where_the_box_overhangs():
    picture = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4) * 20, "L")
    assert np.array_equal(np.asarray(region.crop(picture, (1, 0, 3, 2))), np.asarray(picture)[0:2, 1:3])
    out = np.asarray(region.crop(picture, (0, -1, 4, 5)))
    assert out.shape == (6, 4)
    assert np.array_equal(out[0], out[1]) and np.array_equal(out[1:4], np.asarray(picture))
    assert np.array_equal(out[4], out[3]) and np.array_equal(out[5], out[3])


def test_paste_changes_only_what_alpha_touches():
    rng = np.random.default_rng(0)
    original = Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8), "RGB")
    mask = square_mask((50, 40), (20, 15, 30, 25))
    alpha = region.feather(mask, 4)
    box = (10, 5, 40, 35)
    repainted = Image.new("RGB", (30, 30), (255, 0, 255))
    out = region.paste(original, repainted, alpha, box)
    assert out.size == original.size and out.mode == "RGB"
    before, after, a = np.asarray(original), np.asarray(out), np.asarray(alpha)
    assert np.array_equal(after[a == 0], before[a == 0])
    assert (after[a == 255] == (255, 0, 255)).all()
    ramp = (a > 0) & (a < 255)
    assert (after[ramp] != before[ramp]).any()
    # an overhanging box: only its part inside the picture is used
    out = region.paste(original, Image.new("RGB", (60, 60), (0, 255, 0)), alpha, (-5, -10, 55, 50))
    assert (np.asarray(out)[a == 255] == (0, 255, 0)).all()
    with pytest.raises(ValueError):
        region.paste(original, repainted, alpha, (0, 0, 20, 20))


# --- the built-in model, end to end -----------------------------------------------------------------------------

def test_inpaint_keeps_size_and_everything_outside_the_mask(tmp_path):
    from studio.engine import Studio
    from studio.inference.generate import DrawSettings, InferenceError

    picture = Image.new("RGB", (256, 256), (200, 190, 170))
    ImageDraw.Draw(picture).ellipse((95, 95, 140, 140), fill=(20, 40, 220))  # a blue circle beside the mask ...
    mask = square_mask((256, 256), (150, 150, 200, 200))
    left, top, right, bottom = region.square_crop(region.mask_box(region.feather(mask, 8)), picture.size)
    assert left < 135 and top < 135  # ... partly inside the square the model repaints
    studio = Studio(tmp_path)
    settings = DrawSettings("a photo of a dog", steps=4, seed=1, num_images=2)
    drawn = studio.inpaint("local", "base", picture, mask, settings)
    assert drawn.seeds == [1, 2] and len(drawn.images) == 2
    feather = region.feather_radius(picture.size)
    assert feather <= 8
    outside, inside = ~grown(mask, feather), np.asarray(mask) == 255
    before = np.asarray(picture)
    for image in drawn.images:
        assert image.size == (256, 256) and image.mode == "RGB"
        after = np.asarray(image)
        assert np.array_equal(after[outside], before[outside])  # the circle and all the rest: bit for bit
        assert np.abs(after[inside].astype(int) - before[inside]).mean() > 5  # the square was repainted
    assert not np.array_equal(np.asarray(drawn.images[0]), np.asarray(drawn.images[1]))  # two seeds, two pictures

    # a mask at another size is resized to the picture's (nearest); same seed and mask, same picture
    half = square_mask((128, 128), (75, 75, 100, 100))
    again = studio.inpaint("local", "base", picture, half, DrawSettings("a photo of a dog", steps=4, seed=1))
    assert np.abs(np.asarray(again.images[0], int) - np.asarray(drawn.images[0], int)).max() <= 2  # alone or in a batch

    # a picture smaller than the model (64 px): worked on whole, returned at its size
    tiny = studio.inpaint("local", "base", picture.resize((40, 40)), square_mask((40, 40), (10, 10, 20, 20)),
                          DrawSettings("a photo of a dog", steps=2))
    assert tiny.images[0].size == (40, 40)
    far = ~grown(square_mask((40, 40), (10, 10, 20, 20)), region.feather_radius((40, 40)))
    assert np.array_equal(np.asarray(tiny.images[0])[far], np.asarray(picture.resize((40, 40)))[far])
    with pytest.raises(InferenceError, match="mask is empty"):
        studio.inpaint("local", "base", picture, Image.new("L", (256, 256), 100), DrawSettings("x", steps=2))
    with pytest.raises(InferenceError, match="strength"):
        studio.inpaint("local", "base", picture, mask, DrawSettings("x", steps=2), strength=0)
