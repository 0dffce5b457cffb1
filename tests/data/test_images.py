"""load_photo against a corpus of bad and awkward files, all built here."""

from __future__ import annotations

import io
import random
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from studio.data.images import NEUTRAL_GREY, LoadedPhoto, PhotoRejected, encode_for_display, load_photo


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def quadrants(width: int = 160, height: int = 96) -> Image.Image:
    """Four solid colours: any flip or rotation is visible in the quadrant means."""
    image = Image.new("RGB", (width, height))
    colours = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (230, 230, 40)]
    for i, colour in enumerate(colours):
        x, y = (i % 2) * width // 2, (i // 2) * height // 2
        image.paste(colour, (x, y, x + width // 2, y + height // 2))
    return image


def quadrant_means(image: Image.Image) -> np.ndarray:
    a = np.asarray(image, dtype=np.float64)
    h, w = a.shape[0] // 2, a.shape[1] // 2
    m = h // 4, w // 4  # stay away from JPEG ringing at the borders
    return np.array([a[y + m[0]:y + h - m[0], x + m[1]:x + w - m[1]].mean(axis=(0, 1))
                     for y in (0, h) for x in (0, w)])


# --- not images at all -----------------------------------------------------------------

@pytest.mark.parametrize("data, expected", [
    (b"", "empty"),
    (b"<!DOCTYPE html><html><body>Page not found</body></html>", "web page"),
    (b"  \n<html><head><title>x</title></head></html>", "web page"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "PDF"),
    (b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"\x00" * 40, "ZIP"),
    (b"these are my holiday notes\nnot a photo at all\n", "text file"),
    (b"\x00\x01\x02\x03 random binary \xfe\xff", "not a supported image format"),
])
def test_non_images_renamed_jpg_are_rejected_by_content(tmp_path: Path, data: bytes, expected: str) -> None:
    path = write(tmp_path, "holiday.jpg", data)
    with pytest.raises(PhotoRejected) as info:
        load_photo(path)
    message = str(info.value)
    assert message.startswith("holiday.jpg:")
    assert expected in message
    assert info.value.advice  # always says what to do


def test_heic_without_plugin_says_convert(tmp_path: Path) -> None:
    try:
        import pillow_heif  # noqa: F401
        pytest.skip("pillow-heif is installed, HEIC is readable here")
    except ImportError:
        pass
    data = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    with pytest.raises(PhotoRejected, match="convert it to JPEG or PNG|Convert it to JPEG or PNG"):
        load_photo(write(tmp_path, "IMG_0001.HEIC", data))


def test_exotic_pillow_formats_are_not_opened(tmp_path: Path) -> None:
    # Pillow would happily decode PCX; we only allow the formats we chose.
    data = encode(Image.new("RGB", (100, 100), "red"), "PCX")
    with pytest.raises(PhotoRejected, match="not a supported image format"):
        load_photo(write(tmp_path, "odd.jpg", data))


def test_extension_lies_but_content_is_png(tmp_path: Path) -> None:
    data = encode(Image.new("RGB", (100, 100), "red"), "PNG")
    photo = load_photo(write(tmp_path, "really_png.jpg", data))
    assert photo.format == "PNG" and photo.image.getpixel((5, 5)) == (255, 0, 0)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_supported_formats_load_as_rgb(tmp_path: Path, fmt: str) -> None:
    photo = load_photo(write(tmp_path, f"p.{fmt.lower()}", encode(quadrants(), fmt)))
    assert photo.format == fmt and photo.image.mode == "RGB" and photo.size == (160, 96)
    np.testing.assert_allclose(quadrant_means(photo.image), quadrant_means(quadrants()), atol=20)


def test_avif_loads_when_pillow_supports_it(tmp_path: Path) -> None:
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF support; covered by the 'convert it' rule instead")
    photo = load_photo(write(tmp_path, "phone.avif", encode(quadrants(), "AVIF", quality=90)))
    assert photo.format == "AVIF"
    np.testing.assert_allclose(quadrant_means(photo.image), quadrant_means(quadrants()), atol=20)


# --- size limits and damage -----------------------------------------------------------

def png_declaring(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR is patched to claim width x height (CRC fixed)."""
    data = bytearray(encode(Image.new("L", (8, 8), 128), "PNG"))
    ihdr_data = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr_data
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr_data) & 0xFFFFFFFF)
    return bytes(data)


@pytest.mark.parametrize("width, height", [(30000, 30000), (8000, 8000)])
def test_decompression_bombs_rejected_before_decoding(tmp_path: Path, width: int, height: int) -> None:
    # 8000x8000 is 64 MP: Pillow alone would only warn; 30000^2 is a classic bomb.
    start = time.perf_counter()
    with pytest.raises(PhotoRejected, match="too many pixels") as info:
        load_photo(write(tmp_path, "bomb.png", png_declaring(width, height)))
    assert time.perf_counter() - start < 1.0  # never decoded
    assert "Resize" in info.value.advice


def test_max_pixels_is_configurable(tmp_path: Path) -> None:
    path = write(tmp_path, "big.png", encode(Image.new("RGB", (300, 300)), "PNG"))
    with pytest.raises(PhotoRejected, match="too many pixels"):
        load_photo(path, max_pixels=50_000)
    assert load_photo(path, max_pixels=100_000).size == (300, 300)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("flip_global_flag", [False, True])
def test_truncated_files_rejected(tmp_path: Path, fmt: str, flip_global_flag: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8))
    data = encode(image, fmt)
    # Another library in the process may have set this; we must still notice truncation.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", flip_global_flag)
    with pytest.raises(PhotoRejected, match="damaged or incomplete"):
        load_photo(write(tmp_path, f"cut.{fmt.lower()}", data[: len(data) * 2 // 3]))


def test_too_small_and_too_thin_rejected_mildly_thin_warned(tmp_path: Path) -> None:
    with pytest.raises(PhotoRejected, match="too small"):
        load_photo(write(tmp_path, "dot.png", encode(Image.new("RGB", (1, 1)), "PNG")))
    with pytest.raises(PhotoRejected, match="too long and thin"):
        load_photo(write(tmp_path, "banner.png", encode(Image.new("RGB", (1000, 100)), "PNG")))
    photo = load_photo(write(tmp_path, "wide.png", encode(Image.new("RGB", (1250, 500)), "PNG")))
    assert any("2.5:1" in w for w in photo.warnings)
    assert any("training size" in w for w in photo.warnings)  # 500 px short side < 512


def test_small_photo_warns_below_training_resolution(tmp_path: Path) -> None:
    path = write(tmp_path, "small.png", encode(Image.new("RGB", (300, 300)), "PNG"))
    assert any("training size" in w for w in load_photo(path, train_resolution=512).warnings)
    assert not any("training size" in w for w in load_photo(path, train_resolution=256).warnings)
    with pytest.raises(PhotoRejected, match="at least 400 px"):
        load_photo(path, min_side=400)


# --- orientation, EXIF, colour modes ------------------------------------------------------

# What is stored in the file so that the viewer, applying the EXIF orientation,
# shows the upright picture (EXIF spec semantics; Transpose.ROTATE_90 is counter-clockwise).
STORED_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,   # viewer rotates 90 deg clockwise
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,  # viewer rotates 90 deg counter-clockwise
}


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_orientation_shows_upright(tmp_path: Path, orientation: int) -> None:
    upright = quadrants()
    stored = upright.transpose(STORED_FOR_ORIENTATION[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = write(tmp_path, f"o{orientation}.jpg", encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    photo = load_photo(path)
    assert photo.size == upright.size
    assert photo.original_size == stored.size
    np.testing.assert_allclose(quadrant_means(photo.image), quadrant_means(upright), atol=12)


def test_corrupt_exif_still_loads_with_warning(tmp_path: Path) -> None:
    garbage_exif = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff" + b"\x00" * 30
    data = encode(quadrants(), "JPEG", exif=garbage_exif)
    photo = load_photo(write(tmp_path, "broken_exif.jpg", data))
    assert photo.size == (160, 96)
    assert any("EXIF" in w for w in photo.warnings)


def test_rgba_transparency_composited_on_grey(tmp_path: Path) -> None:
    image = Image.new("RGBA", (100, 100), (255, 0, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, 50, 100))  # left half fully transparent (black underneath)
    photo = load_photo(write(tmp_path, "cutout.png", encode(image, "PNG")))
    assert photo.image.getpixel((10, 50)) == NEUTRAL_GREY
    assert photo.image.getpixel((90, 50)) == (255, 0, 0)


def test_la_and_palette_transparency_composited_on_grey(tmp_path: Path) -> None:
    la = Image.new("LA", (100, 100), (255, 0))
    assert load_photo(write(tmp_path, "la.png", encode(la, "PNG"))).image.getpixel((1, 1)) == NEUTRAL_GREY
    palette = Image.new("P", (100, 100), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.paste(0, (0, 0, 50, 100))
    photo = load_photo(write(tmp_path, "logo.gif", encode(palette, "GIF", transparency=0)))
    assert photo.image.getpixel((10, 50)) == NEUTRAL_GREY
    assert photo.image.getpixel((90, 50)) == (0, 255, 0)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_mid_grey_loads_as_mid_grey_not_white(tmp_path: Path, fmt: str) -> None:
    pixels = np.full((100, 100), 32768, dtype=np.uint16)
    pixels[:, :10] = 65535
    pixels[:, -10:] = 0
    data = encode(Image.fromarray(pixels), fmt)
    photo = load_photo(write(tmp_path, f"scan16.{fmt.lower()}", data))
    assert abs(photo.image.getpixel((50, 50))[0] - 128) <= 1
    assert photo.image.getpixel((2, 50)) == (255, 255, 255)
    assert photo.image.getpixel((97, 50)) == (0, 0, 0)


def test_float_greyscale_tiff_scaled(tmp_path: Path) -> None:
    data = encode(Image.fromarray(np.full((100, 100), 0.5, dtype=np.float32), "F"), "TIFF")
    assert abs(load_photo(write(tmp_path, "f.tif", data)).image.getpixel((5, 5))[0] - 128) <= 1


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    cyan = Image.new("CMYK", (100, 100), (255, 0, 0, 0))
    photo = load_photo(write(tmp_path, "print.jpg", encode(cyan, "JPEG", quality=95)))
    r, g, b = photo.image.getpixel((50, 50))
    assert photo.image.mode == "RGB" and r < 30 and g > 225 and b > 225


def test_animated_gif_uses_first_frame_with_warning(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (100, 100), c) for c in ("red", "blue", "green")]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    photo = load_photo(write(tmp_path, "party.gif", out.getvalue()))
    r, g, b = photo.image.getpixel((50, 50))
    assert r > 200 and b < 50
    assert any("3 frames" in w for w in photo.warnings)


def test_animated_webp_uses_first_frame_with_warning(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (100, 100), c) for c in ("red", "blue")]
    out = io.BytesIO()
    frames[0].save(out, "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True)
    photo = load_photo(write(tmp_path, "anim.webp", out.getvalue()))
    assert photo.image.getpixel((50, 50))[0] > 200
    assert any("frames" in w for w in photo.warnings)


# --- what gets served back -------------------------------------------------------------------

def test_display_encoding_drops_gps_exif_and_original_bytes(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 1
    exif[0x010F] = "SecretCam"
    gps = exif.get_ifd(0x8825)
    gps[2] = (51.0, 30.0, 0.0)  # GPSLatitude
    gps[1] = "N"
    original = encode(quadrants(), "JPEG", quality=95, exif=exif.tobytes(), icc_profile=b"\x00" * 128)
    assert b"SecretCam" in original
    opened = Image.open(io.BytesIO(original))  # carries .info["exif"] straight from the upload
    for fmt in ("PNG", "JPEG"):
        served = encode_for_display(opened, format=fmt)
        assert served != original and b"SecretCam" not in served and b"Exif" not in served
        reopened = Image.open(io.BytesIO(served))
        assert len(reopened.getexif()) == 0 and "icc_profile" not in reopened.info
        assert reopened.size == (160, 96)
    loaded = load_photo(write(tmp_path, "gps.jpg", original))
    assert b"SecretCam" not in encode_for_display(loaded.image)


# --- fuzz: hostile bytes only ever give a photo or PhotoRejected -------------------------------

def _mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    kind = rng.randrange(4) if len(buf) > 16 else 2
    if kind == 0:  # flip a few bytes, often in the header where parsers are fragile
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(min(len(buf), 200)) if rng.random() < 0.6 else rng.randrange(len(buf))
            buf[i] = rng.randrange(256)
    elif kind == 1:
        del buf[rng.randrange(8, len(buf)):]
    elif kind == 2:
        i = rng.randrange(len(buf))
        buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    else:
        i, j = sorted(rng.randrange(len(buf)) for _ in range(2))
        buf[i:j] = b""
    return bytes(buf)


def test_fuzzed_files_only_load_or_reject(tmp_path: Path) -> None:
    rng = random.Random(1234)
    base = Image.fromarray(np.random.default_rng(1).integers(0, 255, (72, 96, 3), dtype=np.uint8))
    seeds = [encode(base, "JPEG"), encode(base, "PNG"), encode(base.convert("P"), "GIF"), encode(base, "WEBP")]
    outcomes = {"loaded": 0, "rejected": 0}
    path = tmp_path / "fuzz.jpg"
    for i in range(400):
        path.write_bytes(_mutate(seeds[i % len(seeds)], rng))
        try:
            result = load_photo(path)
        except PhotoRejected:
            outcomes["rejected"] += 1
        else:
            assert isinstance(result, LoadedPhoto) and result.image.mode == "RGB"
            outcomes["loaded"] += 1
    assert outcomes["rejected"] > 50  # the mutations really did break files
