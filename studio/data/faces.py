"""Face finding and square crop boxes.

Detection uses OpenCV's bundled Haar cascade when this OpenCV has one. OpenCV
5.x wheels dropped `CascadeClassifier` and the cascade XMLs; there, a YuNet
ONNX model named by $STUDIO_FACE_MODEL is used if present, and otherwise
`load_face_detector()` returns None and callers say faces weren't checked
(they never claim "no face" when they could not look).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "FaceBox", "CropBox", "InvalidCropBox", "FaceDetector", "load_face_detector",
    "square_crop_box", "validate_crop_box", "crop_square",
]

DETECT_MAX_SIDE = 640  # detection on a downscaled copy: fast, and faces stay > 24 px
FACE_CROP_SCALE = 2.4  # crop side / face side: hair above, shoulders below
SQUARE_TOLERANCE = 0.05  # a manual crop may be 5% off square (UI rounding)


@dataclass(frozen=True)
class FaceBox:
    x: int
    y: int
    width: int
    height: int

    def to_list(self) -> list[int]:
        return [self.x, self.y, self.width, self.height]


@dataclass(frozen=True)
class CropBox:
    """Square region in upright-image pixels; right/bottom are exclusive (PIL convention)."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def side(self) -> int:
        return self.right - self.left

    def to_tuple(self) -> tuple[int, int, int, int]:
        return (self.left, self.top, self.right, self.bottom)

    def to_list(self) -> list[int]:
        return list(self.to_tuple())


class InvalidCropBox(ValueError):
    """A manual crop box that is outside the photo or not square."""


FaceDetector = Callable[[Image.Image], list[FaceBox]]


def load_face_detector() -> FaceDetector | None:
    """The best face detector this install offers, or None when there is none."""
    return _load_detector_cached(os.environ.get("STUDIO_FACE_MODEL", ""))


@lru_cache(maxsize=4)
def _load_detector_cached(yunet_model: str) -> FaceDetector | None:
    import cv2

    cascade_path = _find_haar_cascade(cv2)
    if cascade_path is not None and hasattr(cv2, "CascadeClassifier"):
        classifier = cv2.CascadeClassifier(str(cascade_path))
        if not classifier.empty():
            return _HaarDetector(classifier)
    if yunet_model and Path(yunet_model).is_file() and hasattr(cv2, "FaceDetectorYN"):
        return _YuNetDetector(cv2.FaceDetectorYN.create(yunet_model, "", (320, 320), 0.8))
    return None


def _find_haar_cascade(cv2_module: object) -> Path | None:
    name = "haarcascade_frontalface_default.xml"
    data = getattr(cv2_module, "data", None)
    folders = [Path(getattr(data, "haarcascades", "") or "/nonexistent")]
    folders.append(Path(getattr(cv2_module, "__file__", "/nonexistent")).parent)
    for folder in folders:
        hits = [folder / name] if (folder / name).is_file() else sorted(folder.rglob(name)) if folder.is_dir() else []
        if hits:
            return hits[0]
    return None


def _downscaled_grey(image: Image.Image) -> tuple[np.ndarray, float]:
    scale = min(1.0, DETECT_MAX_SIDE / max(image.size))
    small = image.convert("L")
    if scale < 1.0:
        small = small.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    return np.asarray(small), scale


def _to_boxes(raw: Sequence[Sequence[float]], scale: float) -> list[FaceBox]:
    boxes = [FaceBox(*(round(float(v) / scale) for v in r[:4])) for r in raw]
    return sorted(boxes, key=lambda b: b.width * b.height, reverse=True)  # largest first


class _HaarDetector:
    def __init__(self, classifier: object) -> None:
        self._classifier = classifier

    def __call__(self, image: Image.Image) -> list[FaceBox]:
        grey, scale = _downscaled_grey(image)
        min_face = max(24, min(grey.shape) // 10)  # ignore faces in the crowd behind the subject
        found = self._classifier.detectMultiScale(  # type: ignore[attr-defined]
            grey, scaleFactor=1.1, minNeighbors=5, minSize=(min_face, min_face))
        return _to_boxes(list(found), scale)


class _YuNetDetector:
    def __init__(self, detector: object) -> None:
        self._detector = detector

    def __call__(self, image: Image.Image) -> list[FaceBox]:
        import cv2

        grey, scale = _downscaled_grey(image)
        bgr = cv2.cvtColor(np.asarray(image.convert("RGB").resize(grey.shape[::-1])), cv2.COLOR_RGB2BGR)
        self._detector.setInputSize((bgr.shape[1], bgr.shape[0]))  # type: ignore[attr-defined]
        _, faces = self._detector.detect(bgr)  # type: ignore[attr-defined]
        return _to_boxes([] if faces is None else [f[:4] for f in faces], scale)


def square_crop_box(size: tuple[int, int], face_box: FaceBox | None, subject_type: str) -> CropBox:
    """The square to train on: around the face (with hair and shoulders) or centred."""
    width, height = size
    short = min(width, height)
    if subject_type == "face" and face_box is not None:
        side = min(short, round(max(face_box.width, face_box.height) * FACE_CROP_SCALE))
        centre_x = face_box.x + face_box.width / 2
        centre_y = face_box.y + face_box.height * 0.6  # a little below the face centre: shoulders over sky
    else:
        side, centre_x, centre_y = short, width / 2, height / 2
    side = max(1, side)
    left = _clamp(round(centre_x - side / 2), 0, width - side)
    top = _clamp(round(centre_y - side / 2), 0, height - side)
    return CropBox(left, top, left + side, top + side)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(value, high))


def validate_crop_box(size: tuple[int, int], box: Sequence[float], *, min_side: int = 64) -> CropBox:
    """Check a user-drawn crop (left, top, right, bottom); a 1-2 px overshoot is clamped."""
    if len(box) != 4:
        raise InvalidCropBox(f"a crop box needs 4 numbers (left, top, right, bottom), got {len(box)}")
    try:
        left, top, right, bottom = (round(float(v)) for v in box)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidCropBox(f"crop box {list(box)!r} is not numbers") from exc
    width, height = size
    if left < -2 or top < -2 or right > width + 2 or bottom > height + 2:
        raise InvalidCropBox(f"crop box {[left, top, right, bottom]} is outside the {width}x{height} photo")
    left, top, right, bottom = max(left, 0), max(top, 0), min(right, width), min(bottom, height)
    box_w, box_h = right - left, bottom - top
    if min(box_w, box_h) < min_side:
        raise InvalidCropBox(f"crop box is {box_w}x{box_h}; make it at least {min_side} px on each side")
    if abs(box_w - box_h) > max(2, SQUARE_TOLERANCE * max(box_w, box_h)):
        raise InvalidCropBox(f"crop box is {box_w}x{box_h}; training needs a square crop")
    side = min(box_w, box_h)  # trim the small excess to an exact square
    return CropBox(left, top, left + side, top + side)


def crop_square(image: Image.Image, box: CropBox, resolution: int) -> Image.Image:
    """Cut `box` out of `image` and resize to resolution x resolution (LANCZOS: sharp, no aliasing)."""
    region = image.crop(box.to_tuple())
    if region.size == (resolution, resolution):
        return region
    return region.resize((resolution, resolution), Image.LANCZOS, reducing_gap=3.0)
