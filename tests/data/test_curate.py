"""Curation of a photo set: per-file verdicts, warnings, crops, captions, training images."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFilter

from studio.data.curate import BLUR_THRESHOLD, blur_score, count_advice, curate, curate_folder_rows
from studio.data.dataset import prepare_training_images
from studio.data.faces import (
    CropBox, FaceBox, InvalidCropBox, crop_square, load_face_detector, square_crop_box, validate_crop_box,
)


def scene(seed: int, width: int = 640, height: int = 480) -> Image.Image:
    """A photo-like synthetic picture: gradient, solid shapes, fine texture (fur, fabric)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    img = np.stack([rng.uniform(40, 200) + rng.uniform(-60, 60) * xx / width + rng.uniform(-60, 60) * yy / height
                    for _ in range(3)], axis=-1).clip(0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(4, 9))):
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.ellipse(img, centre, (int(rng.integers(20, 200)), int(rng.integers(20, 200))),
                    float(rng.uniform(0, 180)), 0, 360, colour, -1)
    texture = cv2.resize(rng.normal(0, 14, (height // 2, width // 2)), (width, height))[..., None]
    return Image.fromarray((img + texture).clip(0, 255).astype(np.uint8))


def save(image: Image.Image, folder: Path, name: str) -> Path:
    path = folder / name
    image.save(path)
    return path


def no_faces(_: Image.Image) -> list[FaceBox]:
    return []


# --- blur calibration (documents BLUR_THRESHOLD) -------------------------------------------

def test_blur_threshold_separates_sharp_from_blurred_at_any_size() -> None:
    for seed in range(4):
        for size in ((640, 480), (2000, 1500)):
            sharp = scene(seed, *size)
            radius = 1.5 * size[0] / 640  # same visible blur whatever the camera resolution
            assert blur_score(sharp) > 3 * BLUR_THRESHOLD
            assert blur_score(sharp.filter(ImageFilter.GaussianBlur(radius))) < BLUR_THRESHOLD / 2


# --- a realistic mixed folder --------------------------------------------------------------------

@pytest.fixture()
def mixed_folder(tmp_path: Path) -> Path:
    for i in range(4):
        save(scene(i), tmp_path, f"dog{i}.jpg")
    scene(0).filter(ImageFilter.GaussianBlur(2.5)).save(tmp_path / "dog0_blurred.jpg")
    scene(1).resize((600, 450)).save(tmp_path / "dog1_copy.png")  # a re-export of dog1
    (tmp_path / "broken.jpg").write_bytes(b"<html>404</html>")
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 100)
    (tmp_path / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0" + b"\x00" * 100)
    (tmp_path / "._dog0.jpg").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 100)
    (tmp_path / "dog2.txt").write_text("a photo of sks dog on the beach\n", encoding="utf-8")
    return tmp_path


def test_mixed_folder_verdicts(mixed_folder: Path) -> None:
    report = curate(sorted(mixed_folder.iterdir()), "object")
    by_name = {v.name: v for v in report.verdicts}
    # Junk files and captions are not photos; every real candidate has a verdict.
    assert set(by_name) == {"dog0.jpg", "dog1.jpg", "dog2.jpg", "dog3.jpg", "dog0_blurred.jpg", "dog1_copy.png", "broken.jpg"}
    assert not by_name["broken.jpg"].accepted and "web page" in (by_name["broken.jpg"].reason or "")
    assert all(v.accepted for n, v in by_name.items() if n != "broken.jpg")  # one bad file loses nothing else
    assert any("blurry" in w for w in by_name["dog0_blurred.jpg"].warnings)
    assert not any("blurry" in w for w in by_name["dog0.jpg"].warnings)
    assert any("near-duplicate of dog1.jpg" in w for w in by_name["dog1_copy.png"].warnings)
    assert not any("near-duplicate" in w for n in ("dog0.jpg", "dog2.jpg", "dog3.jpg") for w in by_name[n].warnings)
    assert by_name["dog2.jpg"].caption == "a photo of sks dog on the beach"
    assert by_name["dog3.jpg"].caption is None
    assert report.count_advice.startswith("More than needed") or report.count_advice.startswith("Enough")


def test_crop_boxes_are_square_and_inside(mixed_folder: Path) -> None:
    for verdict in curate(sorted(mixed_folder.iterdir()), "object").accepted:
        box = verdict.crop_box
        assert box is not None and box.right - box.left == box.bottom - box.top
        assert 0 <= box.left and 0 <= box.top and box.right <= verdict.width and box.bottom <= verdict.height


def test_report_is_json_serialisable_and_cli_rows(mixed_folder: Path) -> None:
    report = curate(sorted(mixed_folder.iterdir()), "object")
    decoded = json.loads(json.dumps(report.to_dict()))
    assert decoded["accepted_count"] == 6 and len(decoded["photos"]) == 7
    assert "path" not in decoded["photos"][0]  # server paths never go to the browser
    rows = curate_folder_rows(mixed_folder, "object")
    assert [set(r) for r in rows] == [{"name", "accepted", "reason", "warnings"}] * 7
    assert json.loads(json.dumps(rows)) == rows
    assert {r["name"] for r in rows if not r["accepted"]} == {"broken.jpg"}


def test_orphan_caption_is_reported_not_judged(tmp_path: Path) -> None:
    paths = [save(scene(0), tmp_path, "a.jpg"), tmp_path / "notes.txt"]
    paths[1].write_text("todo")
    report = curate(paths, "object")
    assert [v.name for v in report.verdicts] == ["a.jpg"]
    assert any("notes.txt" in w for w in report.warnings)


def test_aspect_outlier_warned(tmp_path: Path) -> None:
    paths = [save(scene(i), tmp_path, f"l{i}.jpg") for i in range(3)]
    paths.append(save(scene(9, 480, 800), tmp_path, "tall.jpg"))
    by_name = {v.name: v for v in curate(paths, "object").verdicts}
    assert any("portrait-shaped" in w for w in by_name["tall.jpg"].warnings)
    assert not any("shaped" in w for n in ("l0.jpg", "l1.jpg", "l2.jpg") for w in by_name[n].warnings)


# --- faces ---------------------------------------------------------------------------------------

def test_face_subject_without_face_is_warned(tmp_path: Path) -> None:
    paths = [save(scene(i), tmp_path, f"p{i}.jpg") for i in range(2)]
    report = curate(paths, "face", face_detector=no_faces)
    assert report.faces_checked
    assert all(any("no face found" in w for w in v.warnings) for v in report.verdicts)
    # Objects are never checked for faces.
    assert not any("face" in w for v in curate(paths, "object").verdicts for w in v.warnings)


def test_several_faces_warned_and_crop_uses_largest(tmp_path: Path) -> None:
    small, large = FaceBox(20, 20, 40, 40), FaceBox(400, 150, 100, 100)
    report = curate([save(scene(0), tmp_path, "group.jpg")], "face", face_detector=lambda _: [large, small])
    verdict = report.verdicts[0]
    assert any("2 faces" in w for w in verdict.warnings)
    box = verdict.crop_box
    assert box is not None and box.left <= 400 and box.right >= 500 and box.top <= 150 and box.bottom >= 250


def test_missing_detector_is_said_not_hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("studio.data.curate.load_face_detector", lambda: None)
    report = curate([save(scene(0), tmp_path, "p.jpg")], "face")
    assert not report.faces_checked
    assert any("Face detection isn't available" in w for w in report.warnings)
    assert not any("no face" in w for w in report.verdicts[0].warnings)  # we could not look, so we don't claim


def test_bundled_detector_finds_nothing_in_a_faceless_scene() -> None:
    detector = load_face_detector()
    if detector is None:
        pytest.skip("this OpenCV build has no Haar cascade (OpenCV 5 wheels dropped it) and no YuNet model is set")
    assert detector(scene(3)) == []


def test_face_crop_centres_on_face_with_margin() -> None:
    face = FaceBox(x=900, y=500, width=200, height=200)
    box = square_crop_box((2000, 1500), face, "face")
    assert box.side == box.bottom - box.top and 400 <= box.side <= 600  # hair and shoulders included
    assert box.left < 900 and box.right > 1100 and box.top < 500 and box.bottom > 700
    assert abs((box.left + box.right) / 2 - 1000) <= 1  # horizontally centred on the face


def test_face_crop_clamped_inside_image_near_edges() -> None:
    box = square_crop_box((800, 600), FaceBox(x=700, y=0, width=100, height=100), "face")
    assert box.right == 800 and box.top == 0 and box.side == 240
    huge = square_crop_box((800, 600), FaceBox(x=100, y=50, width=500, height=500), "face")
    assert huge.side == 600 and 0 <= huge.left and huge.right <= 800


def test_object_crop_is_centred_square() -> None:
    assert square_crop_box((1000, 600), None, "object") == CropBox(200, 0, 800, 600)
    assert square_crop_box((600, 1000), FaceBox(0, 0, 10, 10), "object") == CropBox(0, 200, 600, 800)


# --- manual crops and training images ------------------------------------------------------------

def test_manual_crop_validation_errors_are_clear() -> None:
    assert validate_crop_box((800, 600), [100, 100, 401, 400]) == CropBox(100, 100, 400, 400)
    with pytest.raises(InvalidCropBox, match="outside"):
        validate_crop_box((800, 600), [500, 100, 900, 500])
    with pytest.raises(InvalidCropBox, match="square"):
        validate_crop_box((800, 600), [0, 0, 600, 300])
    with pytest.raises(InvalidCropBox, match="at least"):
        validate_crop_box((800, 600), [0, 0, 10, 10])
    with pytest.raises(InvalidCropBox, match="4 numbers"):
        validate_crop_box((800, 600), [0, 0, 10])


def test_prepare_training_images_uses_crops_and_captions(mixed_folder: Path) -> None:
    report = curate(sorted(mixed_folder.iterdir()), "object")
    prepared = prepare_training_images(report.verdicts, 128, {"dog3.jpg": [0, 0, 200, 200]}, "object")
    names = [p.name for p in prepared]
    assert "broken.jpg" not in names and len(prepared) == 6
    assert all(p.image.size == (128, 128) and p.image.mode == "RGB" for p in prepared)
    assert next(p for p in prepared if p.name == "dog2.jpg").caption == "a photo of sks dog on the beach"
    manual = next(p for p in prepared if p.name == "dog3.jpg").image
    expected = crop_square(scene(3), CropBox(0, 0, 200, 200), 128)
    assert np.abs(np.asarray(manual, float) - np.asarray(expected, float)).mean() < 6  # JPEG noise only
    with pytest.raises(InvalidCropBox, match="dog3.jpg"):
        prepare_training_images(report.verdicts, 128, {"dog3.jpg": [0, 0, 300, 100]}, "object")


def test_prepare_from_paths_skips_bad_files(tmp_path: Path) -> None:
    good = save(scene(0), tmp_path, "good.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    prepared = prepare_training_images([bad, good], 64, None, "object")
    assert [p.name for p in prepared] == ["good.png"]
    with pytest.raises(ValueError, match="none of the photos"):
        prepare_training_images([bad], 64, None, "object")


@pytest.mark.parametrize("subject, n, verdict", [
    ("object", 0, "No usable"), ("object", 2, "Too few"), ("object", 4, "Enough"), ("object", 15, "More than needed"),
    ("face", 5, "Too few"), ("face", 11, "Enough"), ("face", 30, "More than needed"),
    ("style", 8, "Too few"), ("style", 15, "Enough"),
])
def test_count_advice(subject: str, n: int, verdict: str) -> None:
    advice = count_advice(subject, n)
    assert advice.startswith(verdict)
    assert n == 0 or f"{n} usable" in advice
    if subject == "face":
        assert "head-and-shoulders" in advice and "backgrounds" in advice
