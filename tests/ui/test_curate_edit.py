"""The Curate tab's "Edit a photo" group through gradio_client: pick a photo, caption it, override and reset its crop."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import handle_file  # noqa: E402

from tests.ui.test_app import client, launch  # noqa: E402


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from studio.engine import Studio
    from tests.tiny import build_tiny_sd

    model = build_tiny_sd(tmp_path_factory.mktemp("tiny") / "sd")
    studio = Studio(root=tmp_path_factory.mktemp("home"), base_model=str(model))
    demo, url = launch(studio)
    yield studio, url
    demo.close()


def photos(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(["left-red.png", "plain.png"]):
        pixels = (np.random.RandomState(i).rand(96, 144, 3) * 60).astype("uint8")
        pixels[:, :72] += np.array([160, 0, 0], dtype="uint8")
        Image.fromarray(pixels).save(folder / name)
        paths.append(folder / name)
    return paths


def test_pick_caption_crop_and_reset(app, tmp_path):
    studio, url = app
    c = client(url)
    gallery, summary = c.predict("", [handle_file(str(p)) for p in photos(tmp_path / "in")], "object", 64,
                                 api_name="/curate_upload")
    assert "2 of 2 photos accepted" in summary
    (dataset_id,) = [p.name for p in (studio.workspace.user_dir("local") / "datasets").iterdir()]

    # after a check the picker lists the accepted photos and shows the first one with its automatic crop
    picker, preview, note, caption, *box = c.predict("", None, api_name="/curate_photos")
    assert picker["value"] == "left-red.png" and [c[0] for c in picker["choices"]] == ["left-red.png", "plain.png"]
    assert Path(preview).is_file() and caption == ""
    assert box == [24, 0, 120, 96] and "automatic crop" in note
    preview, note, caption, *box = c.predict("", "plain.png", api_name="/curate_photo")
    assert "plain.png" in note and box == [24, 0, 120, 96]

    gallery, summary = c.predict("", "plain.png", "a photo of sks dog", "object", 64, api_name="/curate_save_caption")
    assert any("a photo of sks dog" in (item.get("caption") or "") for item in gallery)
    assert next(v for v in studio.photos.check("local", dataset_id).verdicts if v.name == "plain.png").caption == "a photo of sks dog"
    assert c.predict("", "plain.png", api_name="/curate_photo")[2] == "a photo of sks dog"

    out = c.predict("", "left-red.png", 0, 0, 96, 96, "object", 64, api_name="/curate_save_crop")
    gallery, summary, preview, note, *box = out
    assert box == [0, 0, 96, 96] and "your crop" in note and Path(preview).is_file()
    assert any("✂ your crop" in (item.get("caption") or "") for item in gallery)
    assert studio.photos.crops("local", dataset_id) == {"left-red.png": [0, 0, 96, 96]}

    # a bad box is a warning naming the photo, and nothing changes
    with pytest.raises(Exception, match=r"left-red\.png.*square"):
        c.predict("", "left-red.png", 0, 0, 140, 96, "object", 64, api_name="/curate_save_crop")
    with pytest.raises(Exception, match="all four"):
        c.predict("", "left-red.png", 0, 0, None, 96, "object", 64, api_name="/curate_save_crop")
    assert studio.photos.crops("local", dataset_id) == {"left-red.png": [0, 0, 96, 96]}

    gallery, summary, preview, note, *box = c.predict("", "left-red.png", "object", 64, api_name="/curate_reset_crop")
    assert box == [24, 0, 120, 96] and "automatic crop" in note
    assert studio.photos.crops("local", dataset_id) == {}
    assert "2 of 2 photos accepted" in summary and "crops.json" not in summary
