"""Loading one user photo safely: sniff, bound, decode fully, make upright RGB.

A photo is either returned as an upright 8-bit RGB `LoadedPhoto`, or refused
with `PhotoRejected`, whose message names the file and says what to do. No
other exception escapes `load_photo`, so one bad file never sinks a batch.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

__all__ = ["LoadedPhoto", "PhotoRejected", "load_photo", "encode_for_display", "sniff_format", "to_rgb8", "NEUTRAL_GREY"]

NEUTRAL_GREY = (128, 128, 128)  # transparent areas: no colour cast, no black/white halo
MAX_FILE_BYTES = 100_000_000
MAX_ASPECT_REJECT = 3.0
MAX_ASPECT_WARN = 2.0


class PhotoRejected(ValueError):
    """A photo that can't be used, with the reason and what the user can do."""

    def __init__(self, name: str, reason: str, advice: str) -> None:
        super().__init__(f"{name}: {reason}. {advice}")
        self.name = name
        self.reason = reason
        self.advice = advice


@dataclass
class LoadedPhoto:
    name: str
    image: Image.Image  # RGB, 8-bit, upright (EXIF orientation applied)
    format: str  # Pillow format name of the file's real contents, e.g. "JPEG"
    original_size: tuple[int, int]  # (width, height) as stored, before rotation
    warnings: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def load_photo(
    path: Path,
    *,
    max_pixels: int = 40_000_000,
    min_side: int = 64,
    train_resolution: int = 512,
    max_bytes: int = MAX_FILE_BYTES,
) -> LoadedPhoto:
    """Load `path` as an upright RGB photo, or raise PhotoRejected."""
    path = Path(path)
    name = path.name
    data = _read_bounded(path, name, max_bytes)
    fmt = sniff_format(data, name)  # raises PhotoRejected for non-images / unsupported
    warnings: list[str] = []
    try:
        image = _open_bounded(data, fmt, name, max_pixels)
        original_size = image.size
        n_frames = getattr(image, "n_frames", 1)
        if n_frames > 1:
            what = "pages" if fmt == "TIFF" else "frames (animated)"
            warnings.append(f"has {n_frames} {what}; only the first one is used")
        # Pillow treats a short file as an error only while this is False; set it
        # every time because another library in the process may have flipped it.
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        image.load()
        image = _upright(image, warnings)
        rgb = to_rgb8(image)
    except PhotoRejected:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # any decoder failure on hostile bytes means "damaged"
        raise PhotoRejected(
            name, f"the {fmt} data is damaged or incomplete ({type(exc).__name__})",
            "Re-export or re-download the photo and upload it again.",
        ) from exc
    _check_shape(rgb.size, name, min_side, train_resolution, warnings)
    return LoadedPhoto(name=name, image=rgb, format=fmt, original_size=original_size, warnings=warnings)


# Magic bytes -> Pillow format. The extension is never trusted.
_IMAGE_SIGNATURES: list[tuple[int, bytes, str]] = [
    (0, b"\xff\xd8\xff", "JPEG"),
    (0, b"\x89PNG\r\n\x1a\n", "PNG"),
    (0, b"GIF87a", "GIF"),
    (0, b"GIF89a", "GIF"),
    (8, b"WEBP", "WEBP"),  # after b"RIFF" + size
    (0, b"BM", "BMP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
]
_NOT_PHOTO_SIGNATURES: list[tuple[bytes, str]] = [
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"PK\x05\x06", "a ZIP archive"),
    (b"Rar!", "a RAR archive"),
    (b"\x1f\x8b", "a gzip archive"),
]
_HEIF_BRANDS = {b"heic": "HEIF", b"heix": "HEIF", b"hevc": "HEIF", b"heim": "HEIF", b"heis": "HEIF",
                b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}
_CONVERT = "Convert it to JPEG or PNG and upload it again."


def sniff_format(data: bytes, name: str) -> str:
    """The Pillow format to decode `data` with, judged by its first bytes only."""
    if not data:
        raise PhotoRejected(name, "is an empty file", "The upload may have failed; upload the photo again.")
    for offset, magic, fmt in _IMAGE_SIGNATURES:
        if data[offset:offset + len(magic)] == magic and (fmt != "WEBP" or data[:4] == b"RIFF"):
            return fmt
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        fmt = _HEIF_BRANDS[data[8:12]]
        Image.init()  # plugins (e.g. pillow-heif, Pillow's AVIF) register here
        if fmt in Image.OPEN:
            return fmt
        raise PhotoRejected(name, f"is a {fmt} photo, which this install cannot read", _CONVERT)
    for magic, what in _NOT_PHOTO_SIGNATURES:
        if data.startswith(magic):
            raise PhotoRejected(name, f"is {what}, not a photo", "Upload the photo file itself.")
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body", b"<svg")):
        what = "an SVG drawing" if b"<svg" in data[:2048].lower() else "a web page (HTML)"
        raise PhotoRejected(name, f"is {what}, not a photo",
                            "Save the image itself (right-click > Save image as), not the page.")
    if _looks_like_text(data[:4096]):
        raise PhotoRejected(name, "is a text file, not a photo", "Upload the photo file itself.")
    raise PhotoRejected(name, "is not a supported image format",
                        "Use JPEG, PNG, WebP, BMP, GIF or TIFF. " + _CONVERT)


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # invalid UTF-8 well before the cut: binary
            return False
        text = head[: exc.start].decode("utf-8")
    return all(ch.isprintable() or ch in "\r\n\t" for ch in text)


def _read_bounded(path: Path, name: str, max_bytes: int) -> bytes:
    try:
        if not path.is_file():
            raise PhotoRejected(name, "is not a file", "Upload the photo file itself.")
        size = path.stat().st_size
        if size > max_bytes:
            raise PhotoRejected(name, f"file is too large ({size / 1e6:.0f} MB)", "Export it as a JPEG under 100 MB.")
        with path.open("rb") as handle:
            return handle.read(max_bytes + 1)
    except OSError as exc:
        raise PhotoRejected(name, f"could not be read ({exc.strerror or exc})", "Check the file and upload it again.") from exc


def _open_bounded(data: bytes, fmt: str, name: str, max_pixels: int) -> Image.Image:
    """Open lazily (header only) with only the sniffed format allowed, then bound the size."""
    try:
        image = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError as exc:
        raise _too_many_pixels(name, None, max_pixels) from exc
    width, height = image.size
    # Pillow only warns between 1x and 2x MAX_IMAGE_PIXELS; we refuse before decoding.
    limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
    if width <= 0 or height <= 0:
        raise PhotoRejected(name, "declares an empty image", "Re-export the photo.")
    if width * height > limit:
        raise _too_many_pixels(name, (width, height), limit)
    return image


def _too_many_pixels(name: str, size: tuple[int, int] | None, limit: int) -> PhotoRejected:
    dims = f" ({size[0]}x{size[1]})" if size else ""
    return PhotoRejected(
        name, f"has too many pixels{dims}, more than {limit / 1e6:.0f} megapixels",
        "Resize it to at most 4000 px on the longest side and upload it again.",
    )


def _upright(image: Image.Image, warnings: list[str]) -> Image.Image:
    """Apply EXIF orientation; a damaged EXIF block only costs a warning."""
    raw_exif = image.info.get("exif")
    try:
        exif = image.getexif()
        if raw_exif and len(raw_exif) > 8 and len(exif) == 0:
            warnings.append("its EXIF data is damaged; check the photo shows upright")
            return image
        return ImageOps.exif_transpose(image)
    except Exception:  # Pillow's EXIF parser raises many types on garbage
        warnings.append("its EXIF data is damaged; check the photo shows upright")
        return image


def to_rgb8(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency goes onto neutral grey."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(image), mode), "L").convert("RGB")
    if (mode == "P" and "transparency" in image.info) or mode in ("PA", "LA", "La", "RGBa", "RGBA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*NEUTRAL_GREY, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _scale_to_uint8(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Scale high-bit-depth greyscale to 0..255 by its nominal range, not by clipping."""
    values = np.nan_to_num(pixels.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and low >= 0 and 255 < high <= 65535):
        scaled = values / 257.0  # 16-bit full range; 32768 -> 127.5, mid-grey
    elif mode == "F" and low >= 0 and high <= 1.0:
        scaled = values * 255.0
    elif low >= 0 and high <= 255:
        scaled = values
    else:  # unknown range: stretch what is there
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _check_shape(size: tuple[int, int], name: str, min_side: int, train_resolution: int, warnings: list[str]) -> None:
    width, height = size
    short, long = min(width, height), max(width, height)
    if short < min_side:
        raise PhotoRejected(
            name, f"is too small ({width}x{height})",
            f"Use a photo at least {min_side} px on its shortest side, ideally {train_resolution} px or more.",
        )
    aspect = long / short
    if aspect > MAX_ASPECT_REJECT:
        raise PhotoRejected(
            name, f"is too long and thin ({width}x{height}, {aspect:.1f}:1)",
            "Crop it closer to the subject (at most 3:1) and upload it again.",
        )
    if aspect > MAX_ASPECT_WARN:
        warnings.append(f"is {aspect:.1f}:1; the square crop will cut off a lot of it")
    if short < train_resolution:
        warnings.append(f"is smaller than the training size ({short} px < {train_resolution} px) and will look soft")


def encode_for_display(image: Image.Image, *, format: str = "PNG", quality: int = 90) -> bytes:
    """Re-encode pixels only: no EXIF (GPS!), ICC, text chunks or original bytes survive."""
    if format not in ("PNG", "JPEG", "WEBP"):
        raise ValueError(f"unsupported display format {format!r}")
    rgb = to_rgb8(image)
    clean = Image.frombytes("RGB", rgb.size, rgb.tobytes())  # a fresh image carries no .info
    out = io.BytesIO()
    if format == "PNG":
        clean.save(out, format="PNG", optimize=False)
    else:
        clean.save(out, format=format, quality=quality)
    return out.getvalue()
