"""Turning curated photos into the square RGB images the trainer consumes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from studio.data.curate import PhotoVerdict, read_caption
from studio.data.faces import CropBox, FaceDetector, crop_square, load_face_detector, square_crop_box, validate_crop_box
from studio.data.images import PhotoRejected, load_photo

__all__ = ["PreparedImage", "prepare_training_images"]


@dataclass
class PreparedImage:
    name: str
    image: Image.Image  # RGB, resolution x resolution
    caption: str | None = None


def prepare_training_images(
    paths_or_verdicts: Sequence[Path | str | PhotoVerdict],
    resolution: int,
    crops: Mapping[str, Sequence[float]] | None = None,
    subject_type: str = "object",
    *,
    face_detector: FaceDetector | None = None,
) -> list[PreparedImage]:
    """Load, crop and resize every usable photo.

    Crop priority: the user's manual box in `crops[name]` (validated; a bad one
    raises InvalidCropBox naming the photo), then the verdict's crop box, then
    a fresh one (around the largest face for face subjects). Rejected verdicts
    and unreadable files are skipped so one bad photo never stops training;
    having none left raises ValueError.
    """
    crops = crops or {}
    detector = face_detector or (load_face_detector() if subject_type == "face" else None)
    prepared: list[PreparedImage] = []
    for item in paths_or_verdicts:
        verdict = item if isinstance(item, PhotoVerdict) else None
        if verdict is not None and not verdict.accepted:
            continue
        path = verdict.path if verdict else Path(item)  # type: ignore[arg-type]
        name = verdict.name if verdict else path.name
        try:
            photo = load_photo(path, train_resolution=resolution)
        except PhotoRejected:
            continue
        box = _choose_box(name, photo.image, crops, verdict, subject_type, detector)
        caption = verdict.caption if verdict else read_caption(path)
        prepared.append(PreparedImage(name, crop_square(photo.image, box, resolution), caption))
    if not prepared:
        raise ValueError("none of the photos could be used for training; check the curation report")
    return prepared


def _choose_box(name: str, image: Image.Image, crops: Mapping[str, Sequence[float]], verdict: PhotoVerdict | None,
                subject_type: str, detector: FaceDetector | None) -> CropBox:
    if name in crops:
        try:
            return validate_crop_box(image.size, crops[name])
        except ValueError as exc:
            raise type(exc)(f"{name}: {exc}") from exc
    if verdict is not None and verdict.crop_box is not None and (verdict.width, verdict.height) == image.size:
        return verdict.crop_box
    faces = detector(image) if subject_type == "face" and detector is not None else []
    return square_crop_box(image.size, faces[0] if faces else None, subject_type)
