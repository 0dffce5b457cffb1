"""Checking a set of subject photos before training: one verdict per file.

Bad files are rejected one by one (never the whole set); usable-but-weak
photos get warnings a person can act on (blurry, duplicate, odd shape, no face).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image

from studio.data.faces import CropBox, FaceBox, FaceDetector, load_face_detector, square_crop_box
from studio.data.images import PhotoRejected, load_photo

__all__ = [
    "SubjectType", "PhotoVerdict", "CurationReport", "curate", "count_advice",
    "curate_folder_rows", "list_dataset_files", "read_caption", "blur_score", "blur_threshold", "looks_blurry",
    "analysis_side", "dhash", "warning_tag",
]

SubjectType = Literal["face", "object", "style"]
# Sharpness is judged on a grey copy whose short side is min(photo's short side, ANALYSIS_SIDE): a big photo is
# scaled down (a camera's 6000 px are as sharp as the 512 px the model sees), a small one is measured as it is.
# Never scaled up: an upscaled 64 px photo is smooth everywhere and would look blurry however sharp it is.
ANALYSIS_SIDE = 512
# blur_score compares the detail between neighbouring pixels with the detail left after a Gaussian blur of
# BLUR_REFERENCE_SIGMA px. A ratio, so it does not care how much of the frame has edges or how contrasty they are
# (the variance of the Laplacian, used before, called a small sharp star on a plain background blurry).
BLUR_REFERENCE_SIGMA = 1.5
# The threshold: 3.5 at a 64 px measuring size, rising by 1/3 per doubling to 4.5 at 512 px (blur_threshold).
# Measured with tests/data/test_curate.py's helpers: "sigma" = a Gaussian blur applied at the measured size, and a
# JPEG (quality 75) of the sigma 1.5 copy counted with the blurred ones. Calibrated on gradio's sample photos
# cheetah, cheetah1, lion and tower (at their own size and scaled down), the synthetic test scenes and the demo
# photos; gradio's groot.jpeg was kept aside and only checked once the threshold was set.
#   short side   sharp, lowest              sigma 1.5, highest            sigma 3, highest
#   343-480 px   9.3 scene, 11.7 tower      3.0 scene, 2.5 cheetah        1.6
#   256 px       6.2 cheetah1               2.4 scene, 2.3 cheetah        1.4
#   128 px       7.1 lion                   2.2 tower, cheetah            1.5
#   64 px        5.3 scene, 5.7 demo        2.5 cheetah, 1.9 lion         1.6
#   held out: groot at 512/256/128/64 px: sharp 7.4/9.2/7.5/7.0, sigma 1.5 1.9/1.7/1.7/1.6, sigma 3 1.2
# The smallest pictures score lowest when sharp (little fine texture is left at 64 px) and the biggest score highest
# when blurred, hence the ramp: every case above is at least 1.4x away from its threshold (a constant 4.0: 1.3x).
# A 1.5 px blur on a 2000 px photo is gone once it is scaled to 512 px (it scores 9.5, sharp: 24): not flagged.
BLUR_THRESHOLD_SMALL = 3.5  # at a 64 px (or smaller) measuring size
BLUR_THRESHOLD_LARGE = 4.5  # at ANALYSIS_SIDE
DUPLICATE_MAX_BITS = 8  # of 64 dHash bits; unrelated photos differ in ~32
ASPECT_OUTLIER_FACTOR = 1.6  # e.g. one 9:16 portrait among 4:3 landscapes
IGNORED_NAMES = {"thumbs.db", "desktop.ini", "__macosx", "icon\r", "crops.json"}  # crops.json: the studio's own crop overrides
CAPTION_SUFFIX = ".txt"
MAX_CAPTION_CHARS = 1000


@dataclass
class PhotoVerdict:
    name: str
    path: Path  # server-side; deliberately left out of to_dict()
    accepted: bool
    reason: str | None = None  # why rejected (None when accepted)
    advice: str | None = None  # what to do about the rejection
    warnings: list[str] = field(default_factory=list)
    width: int = 0  # upright size
    height: int = 0
    face_boxes: list[FaceBox] = field(default_factory=list)  # largest first
    crop_box: CropBox | None = None  # square, upright-image pixels
    caption: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "accepted": self.accepted, "reason": self.reason, "advice": self.advice,
            "warnings": list(self.warnings), "width": self.width, "height": self.height,
            "face_boxes": [b.to_list() for b in self.face_boxes],
            "crop_box": self.crop_box.to_list() if self.crop_box else None, "caption": self.caption,
        }


@dataclass
class CurationReport:
    subject_type: SubjectType
    resolution: int
    verdicts: list[PhotoVerdict]
    warnings: list[str] = field(default_factory=list)  # about the set, not one photo
    count_advice: str = ""
    faces_checked: bool = False  # False when no face detector is available

    @property
    def accepted(self) -> list[PhotoVerdict]:
        return [v for v in self.verdicts if v.accepted]

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject_type": self.subject_type, "resolution": self.resolution,
            "accepted_count": len(self.accepted), "count_advice": self.count_advice,
            "faces_checked": self.faces_checked, "warnings": list(self.warnings),
            "photos": [v.to_dict() for v in self.verdicts],
        }


# subject -> (fewest that work well, most that still help, what to aim for)
_COUNT_GUIDE: dict[str, tuple[int, int, str]] = {
    "object": (3, 8, "3-5 photos from different angles and backgrounds"),
    "face": (10, 20, "10-12 photos: a mix of close-ups and head-and-shoulders shots, varied backgrounds"),
    "style": (10, 25, "10-20 examples of the style with varied subjects"),
}


# A word or two for each photo warning (the gallery caption's "⚠ 2 warnings: blurry, duplicate"); the full text is
# for the list above the gallery. Covers the warnings of this module and of studio.data.images.load_photo.
_WARNING_TAGS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"looks blurry"), "blurry"),
    (re.compile(r"near-duplicate"), "duplicate"),
    (re.compile(r"-shaped, unlike"), "odd shape"),
    (re.compile(r"^no face found"), "no face"),
    (re.compile(r"^(\d+) faces found"), r"\1 faces"),
    (re.compile(r"smaller than the training size"), "small"),
    (re.compile(r"^is [\d.]+:1\b"), "long shape"),
    (re.compile(r"^has \d+ (pages|frames)"), "first frame only"),
    (re.compile(r"EXIF data is damaged"), "EXIF damaged"),
]


def warning_tag(warning: str) -> str:
    """A short word for a photo warning ("blurry", "duplicate", ...); an unknown one is cut to its first words."""
    for pattern, tag in _WARNING_TAGS:
        found = pattern.search(warning)
        if found:
            return found.expand(tag)
    head = re.split(r"[;,(]", warning, maxsplit=1)[0].strip()
    if len(head) <= 24:
        return head
    cut = head[:23]
    return (cut[:cut.rindex(" ")] if " " in cut[12:] else cut).rstrip() + "…"


def count_advice(subject_type: str, n_accepted: int) -> str:
    """How many photos this kind of subject needs, and where the user stands."""
    low, high, aim = _COUNT_GUIDE.get(subject_type, _COUNT_GUIDE["object"])
    if n_accepted == 0:
        return f"No usable photos yet. Aim for {aim}."
    if n_accepted < low:
        return f"Too few: {n_accepted} usable photo(s). Aim for {aim}."
    if n_accepted <= high:
        return f"Enough: {n_accepted} usable photos. Aim for {aim}."
    return f"More than needed: {n_accepted} usable photos. Aim for {aim}; keep the sharpest and most varied."


def analysis_side(size: tuple[int, int]) -> int:
    """The short side sharpness is measured at for a photo of this size: its own, at most ANALYSIS_SIDE."""
    return max(1, min(min(size), ANALYSIS_SIDE))


def blur_score(image: Image.Image) -> float:
    """How much finer the pixel-to-pixel detail is than what a BLUR_REFERENCE_SIGMA blur leaves (higher = sharper).

    The mean squared difference between neighbouring pixels, divided by the same after the reference blur, on a grey
    copy at analysis_side(). A blur removes most of a sharp picture's detail (ratio about 5-30) but little of a
    blurred one's, which has no fine detail left to lose (about 1-3). 0.0 for a picture with no detail at all.
    """
    grey = _analysis_grey(image)
    coarse = _detail_energy(cv2.GaussianBlur(grey, (0, 0), BLUR_REFERENCE_SIGMA))
    return _detail_energy(grey) / coarse if coarse > 1e-12 else 0.0


def blur_threshold(side: int) -> float:
    """blur_score below which a photo measured at `side` px (its analysis_side) looks blurry; see the figures above."""
    octaves = min(max(float(np.log2(max(side, 1) / 64)), 0.0), 3.0)  # 64 px -> 0, ANALYSIS_SIDE (512) -> 3
    return BLUR_THRESHOLD_SMALL + (BLUR_THRESHOLD_LARGE - BLUR_THRESHOLD_SMALL) * octaves / 3


def looks_blurry(image: Image.Image) -> bool:
    return blur_score(image) < blur_threshold(analysis_side(image.size))


def _detail_energy(grey: np.ndarray) -> float:
    """Mean squared difference between horizontal and vertical neighbours."""
    if grey.shape[0] < 2 or grey.shape[1] < 2:
        return 0.0
    return float(np.square(np.diff(grey, axis=0)).mean() + np.square(np.diff(grey, axis=1)).mean())


def dhash(image: Image.Image) -> int:
    """64-bit difference hash: robust to resizing, re-encoding and mild blur."""
    small = np.asarray(image.convert("L").resize((9, 8), Image.BILINEAR), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def _analysis_grey(image: Image.Image) -> np.ndarray:
    """Grey copy at analysis_side(): scaled down when bigger, never up."""
    grey = image.convert("L")
    side = analysis_side(image.size)
    if side < min(image.size):
        scale = side / min(image.size)
        grey = grey.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    return np.asarray(grey, dtype=np.float64)


def read_caption(photo_path: Path) -> str | None:
    """`name.txt` beside `name.jpg` is that photo's caption."""
    caption_path = photo_path.with_suffix(CAPTION_SUFFIX)
    if caption_path == photo_path or not caption_path.is_file():
        return None
    text = caption_path.read_bytes()[: MAX_CAPTION_CHARS * 4].decode("utf-8", errors="replace")
    return " ".join(text.split())[:MAX_CAPTION_CHARS] or None


def _is_stray(path: Path) -> bool:
    name = path.name
    return name.startswith(".") or name.lower() in IGNORED_NAMES or "__MACOSX" in path.parts


def list_dataset_files(folder: Path) -> list[Path]:
    """Candidate photos in a folder: no hidden/OS junk files, no caption .txt files, no subfolders."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder of photos")
    return sorted(p for p in folder.iterdir() if p.is_file() and not _is_stray(p) and p.suffix.lower() != CAPTION_SUFFIX)


def curate(
    paths: Iterable[Path],
    subject_type: SubjectType,
    resolution: int = 512,
    *,
    face_detector: FaceDetector | None = None,
    min_side: int = 64,
) -> CurationReport:
    """Check every photo; `face_detector=None` means use the best one installed (if any)."""
    if subject_type not in ("face", "object", "style"):
        raise ValueError(f"subject_type must be 'face', 'object' or 'style', not {subject_type!r}")
    all_paths = [Path(p) for p in paths]
    photo_paths = [p for p in all_paths if not _is_stray(p) and p.suffix.lower() != CAPTION_SUFFIX]
    report_warnings = _orphan_caption_warnings(all_paths, photo_paths)
    detector = face_detector if face_detector is not None else (load_face_detector() if subject_type == "face" else None)
    if subject_type == "face" and detector is None:
        report_warnings.append("Face detection isn't available in this install: faces were not checked and crops are centred.")
    verdicts: list[PhotoVerdict] = []
    hashes: list[tuple[str, int]] = []
    for path in photo_paths:
        verdict, image = _check_one(path, _unique_name(path, verdicts), subject_type, resolution, detector, min_side)
        verdicts.append(verdict)
        if image is not None:
            _flag_duplicate(verdict, dhash(image), hashes)
    _flag_aspect_outliers([v for v in verdicts if v.accepted])
    n_ok = sum(v.accepted for v in verdicts)
    return CurationReport(subject_type, resolution, verdicts, report_warnings, count_advice(subject_type, n_ok),
                          faces_checked=subject_type == "face" and detector is not None)


def _check_one(path: Path, name: str, subject_type: str, resolution: int, detector: FaceDetector | None,
               min_side: int) -> tuple[PhotoVerdict, Image.Image | None]:
    try:
        photo = load_photo(path, min_side=min_side, train_resolution=resolution)
    except PhotoRejected as rejected:
        return PhotoVerdict(name, path, False, rejected.reason, rejected.advice), None
    image = photo.image
    verdict = PhotoVerdict(name, path, True, warnings=list(photo.warnings), width=image.width,
                           height=image.height, caption=read_caption(path))
    if looks_blurry(image):
        verdict.warnings.append("looks blurry or out of focus; a sharp photo teaches the model more")
    if subject_type == "face" and detector is not None:
        verdict.face_boxes = detector(image)
        if not verdict.face_boxes:
            verdict.warnings.append("no face found; for a face subject, use photos where the face is clearly visible")
        elif len(verdict.face_boxes) > 1:
            verdict.warnings.append(f"{len(verdict.face_boxes)} faces found; the crop uses the largest. "
                                    "Photos of the subject alone work best")
    face = verdict.face_boxes[0] if verdict.face_boxes else None
    verdict.crop_box = square_crop_box(image.size, face, subject_type)
    # Keep only a small copy for the duplicate hash: 20 full-size photos would cost GBs.
    return verdict, image.resize((64, 64), Image.BILINEAR)


def _unique_name(path: Path, earlier: list[PhotoVerdict]) -> str:
    taken = {v.name for v in earlier}
    return path.name if path.name not in taken else f"{path.parent.name}/{path.name}"


def _flag_duplicate(verdict: PhotoVerdict, hash_value: int, seen: list[tuple[str, int]]) -> None:
    for other_name, other_hash in seen:
        if (hash_value ^ other_hash).bit_count() <= DUPLICATE_MAX_BITS:
            verdict.warnings.append(f"looks like a near-duplicate of {other_name}; duplicates make the model "
                                    "memorise one shot, keep the better one")
            break
    seen.append((verdict.name, hash_value))


def _flag_aspect_outliers(accepted: list[PhotoVerdict]) -> None:
    if len(accepted) < 3:
        return
    aspects = np.array([v.width / v.height for v in accepted])
    typical = float(np.median(aspects))
    for verdict, aspect in zip(accepted, aspects):
        if max(aspect / typical, typical / aspect) > ASPECT_OUTLIER_FACTOR:
            shape = "portrait" if aspect < 1 else "landscape"
            verdict.warnings.append(f"is {shape}-shaped, unlike most of the others; check its square crop keeps the subject")


def _orphan_caption_warnings(all_paths: list[Path], photo_paths: list[Path]) -> list[str]:
    stems = {p.with_suffix("") for p in photo_paths}
    return [f"{p.name}: caption file with no matching photo (ignored)" for p in all_paths
            if p.suffix.lower() == CAPTION_SUFFIX and not _is_stray(p) and p.with_suffix("") not in stems]


def curate_folder_rows(folder: Path, subject_type: SubjectType, resolution: int = 512) -> list[dict[str, Any]]:
    """Rows for `python -m studio curate DIR --json`: one JSON object per file."""
    folder = Path(folder)
    candidates = list_dataset_files(folder)
    captions = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == CAPTION_SUFFIX]
    report = curate(candidates + captions, subject_type, resolution)
    return [{"name": v.name, "accepted": v.accepted, "reason": v.reason, "warnings": list(v.warnings)}
            for v in report.verdicts]
