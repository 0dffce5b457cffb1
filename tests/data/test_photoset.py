"""Per-photo edits on a photo set: captions beside the photos, manual crops in crops.json, and training using them."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from studio.data.faces import InvalidCropBox
from studio.engine import Studio
from studio.workspace import NotFound

RED, BLUE = (220, 30, 30), (30, 30, 220)


@pytest.fixture
def studio(tmp_path: Path) -> Studio:
    model = tmp_path / "model"  # resolving a diffusers folder only reads model_index.json: no model is loaded here
    model.mkdir()
    (model / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return Studio(tmp_path / "home", base_model=str(model))


def two_colour(folder: Path, name: str = "two.png", size: tuple[int, int] = (128, 64)) -> Path:
    """Left half red, right half blue: the automatic (centred) square crop holds both, a left-half crop only red."""
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    pixels = np.zeros((height, width, 3), dtype="uint8")
    pixels[:, : width // 2] = RED
    pixels[:, width // 2 :] = BLUE
    Image.fromarray(pixels).save(folder / name)
    return folder / name


@pytest.fixture
def photo_set(studio: Studio, tmp_path: Path) -> str:
    return studio.photos.add("alice", [two_colour(tmp_path / "in"), two_colour(tmp_path / "in", "other.png")])


def verdict(studio: Studio, dataset_id: str, name: str, user: str = "alice"):
    return next(v for v in studio.photos.check(user, dataset_id).verdicts if v.name == name)


def test_caption_is_written_beside_the_photo_and_read_back(studio: Studio, photo_set: str) -> None:
    assert studio.photos.set_caption("alice", photo_set, "two.png", "  a photo of\n sks   dog ") == "a photo of sks dog"
    assert (studio.workspace.dataset_dir("alice", photo_set) / "two.txt").read_text().strip() == "a photo of sks dog"
    assert verdict(studio, photo_set, "two.png").caption == "a photo of sks dog"
    assert verdict(studio, photo_set, "other.png").caption is None
    assert studio.photos.set_caption("alice", photo_set, "two.png", "  ") is None  # empty removes it
    assert not (studio.workspace.dataset_dir("alice", photo_set) / "two.txt").exists()
    assert verdict(studio, photo_set, "two.png").caption is None
    with pytest.raises(ValueError, match="at most"):
        studio.photos.set_caption("alice", photo_set, "two.png", "x" * 1001)
    with pytest.raises(ValueError, match="braces"):
        studio.photos.set_caption("alice", photo_set, "two.png", "a photo of {name}")
    assert studio.photos.set_caption("alice", photo_set, "two.png", "{identifier} {class_noun}") == "{identifier} {class_noun}"


def test_the_demo_photo_set_comes_with_its_captions(studio: Studio) -> None:
    dataset = studio.photos.add_demo("alice")
    verdicts = studio.photos.check("alice", dataset, resolution=64).verdicts
    assert [v.name for v in verdicts] == [f"0{i}.png" for i in range(5)]
    assert all(v.accepted and "{identifier} star" in v.caption for v in verdicts), [(v.name, v.caption) for v in verdicts]


def test_crop_is_stored_reset_and_checked(studio: Studio, photo_set: str) -> None:
    assert studio.photos.crops("alice", photo_set) == {}
    assert studio.photos.set_crop("alice", photo_set, "two.png", [0, 0, 64, 65]) == [0, 0, 64, 64]  # trimmed to a square
    assert studio.photos.crops("alice", photo_set) == {"two.png": [0, 0, 64, 64]}
    with pytest.raises(InvalidCropBox, match=r"two\.png.*square"):
        studio.photos.set_crop("alice", photo_set, "two.png", [0, 0, 128, 64])
    with pytest.raises(InvalidCropBox, match=r"other\.png.*outside"):
        studio.photos.set_crop("alice", photo_set, "other.png", [100, 0, 200, 64])
    with pytest.raises(InvalidCropBox, match=r"other\.png"):
        studio.photos.set_crop("alice", photo_set, "other.png", [0, 0, None, 64])
    assert studio.photos.crops("alice", photo_set) == {"two.png": [0, 0, 64, 64]}  # a refused box changes nothing
    studio.photos.set_crop("alice", photo_set, "two.png", None)
    assert studio.photos.crops("alice", photo_set) == {}
    assert not (studio.workspace.dataset_dir("alice", photo_set) / "crops.json").exists()


def test_only_the_owner_edits_only_photos(studio: Studio, photo_set: str) -> None:
    studio.photos.add("bob", [])  # bob exists, with a set of his own
    for edit in (lambda u, n: studio.photos.set_caption(u, photo_set, n, "mine now"),
                 lambda u, n: studio.photos.set_crop(u, photo_set, n, [0, 0, 64, 64])):
        with pytest.raises(NotFound):
            edit("bob", "two.png")
        for name in ("missing.png", "crops.json", "two.txt", "", "../two.png", "/etc/passwd"):
            with pytest.raises((NotFound, ValueError)):
                edit("alice", name)
    with pytest.raises(NotFound):
        studio.photos.crops("bob", photo_set)
    assert studio.photos.crops("alice", photo_set) == {} and verdict(studio, photo_set, "two.png").caption is None


def test_damaged_crops_file_is_a_clear_error(studio: Studio, photo_set: str) -> None:
    (studio.workspace.dataset_dir("alice", photo_set) / "crops.json").write_text("{not json")
    with pytest.raises(ValueError, match="crops.json"):
        studio.photos.crops("alice", photo_set)
    (studio.workspace.dataset_dir("alice", photo_set) / "crops.json").write_text('{"two.png": 5}')
    with pytest.raises(ValueError, match="crops.json"):
        studio.photos.crops("alice", photo_set)


@pytest.mark.parametrize("kind", ["photo set", "folder run"])
def test_training_uses_the_crop_override(studio: Studio, photo_set: str, tmp_path: Path, monkeypatch, kind: str) -> None:
    """The runner prepares the photos with the set's crops.json (or the CLI folder's) when the run has no crops."""
    import studio.data.dataset as dataset
    import studio.models.families as families
    from studio.events import EventLog
    from studio.training.commands import RunCommands
    from studio.runs import RunFolder
    from studio.training.runner import run_training

    if kind == "photo set":
        studio.photos.set_crop("alice", photo_set, "two.png", [0, 0, 64, 64])
        meta, photos = {"dataset_id": photo_set}, studio.photos.folder("alice", photo_set)
    else:
        folder = two_colour(tmp_path / "cli-photos").parent
        (folder / "crops.json").write_text(json.dumps({"two.png": [0, 0, 64, 64]}))
        meta, photos = {"images_dir": str(folder)}, folder
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({**meta, "presets": [], "overrides": {"resolution": 64, "class_noun": "dog"}, "crops": {}}))

    prepared = []

    def prepare_then_stop(*args, **kwargs):
        prepared.extend(real_prepare(*args, **kwargs))
        raise ValueError("stop before training")

    real_prepare = dataset.prepare_training_images
    monkeypatch.setattr(dataset, "prepare_training_images", prepare_then_stop)
    monkeypatch.setattr(families, "load_components", lambda source: SimpleNamespace(native_resolution=64))
    outcome = run_training(studio.training, RunFolder(run_dir), photos, EventLog(run_dir / "events.jsonl"), RunCommands(), resume=False)
    failed = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()][-1]
    assert outcome.status == "failed" and failed["error"] == "stop before training"  # on purpose, once prepared
    image = next(p.image for p in prepared if p.name == "two.png")
    assert image.size == (64, 64)
    assert np.abs(np.asarray(image, float) - RED).max() < 8  # all red: the left half, not the centred default
    if kind == "photo set":
        centred = next(p.image for p in prepared if p.name == "other.png")  # no override: the automatic crop
        assert np.asarray(centred)[:, :30].mean(axis=(0, 1))[0] > 200 and np.asarray(centred)[:, -30:].mean(axis=(0, 1))[2] > 200
