"""The app end to end through gradio_client, on a tiny random model: curate -> train -> generate -> compare -> inpaint."""
from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import handle_file  # noqa: E402

from studio.ui import views  # noqa: E402
from studio.ui.tab_train import SETTING_NAMES  # noqa: E402

# A run that takes seconds on a CPU: 4 steps, 2 class images of 1 step each, previews at 0, 2 and 4.
FAST = "preview_steps = 2\npreview_seeds = [0]\nclass_image_steps = 1\nclass_image_batch = 2"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_photos(folder: Path, n: int = 3) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        pixels = (np.random.RandomState(i).rand(96, 96, 3) * 255).astype("uint8")
        pixels[20:70, 20:70] = (200, 40 * i, 60)
        Image.fromarray(pixels).save(folder / f"photo{i}.png")
        paths.append(folder / f"photo{i}.png")
    (folder / "broken.jpg").write_text("not a photo")
    paths.append(folder / "broken.jpg")
    return paths


def train_args(**values) -> list:
    """Positional settings for /train_start, by name (see tab_train.SETTING_NAMES)."""
    base = {"subject_type": "object", "method": "LoRA", "identifier": "sks", "class_noun": "dog", "max_steps": 4,
            "learning_rate": 1e-4, "batch_size": 1, "lora_rank": 4, "adapter": "lora", "conv_rank": 0, "with_prior_preservation": True,
            "num_class_images": 2, "prior_loss_weight": 1.0, "snr_gamma": 0, "offset_noise": 0, "resolution": 32,
            "mixed_precision": "auto", "gradient_checkpointing": False, "preview_every": 2, "preview_budget": 1.0,
            "checkpoint_every": 0, "detail_stage": False,
            "seed": 0, "extra": FAST, "preset": "object-lora", "run_name": ""}
    base.update(values)
    return [base[name] for name in SETTING_NAMES]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from tests.tiny import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny") / "sd")


def launch(studio):
    from studio.ui.app import serve

    port = free_port()
    demo = serve(studio, prevent_thread_lock=True, server_port=port, quiet=True)  # the page `python app.py` serves
    return demo, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def local_app(tiny_model, tmp_path_factory):
    from studio.engine import Studio

    studio = Studio(root=tmp_path_factory.mktemp("home"), base_model=str(tiny_model))
    demo, url = launch(studio)
    yield studio, url
    demo.close()


def client(url: str):
    return gradio_client.Client(url, verbose=False, analytics_enabled=False) if _takes_analytics() else \
        gradio_client.Client(url, verbose=False)


def _takes_analytics() -> bool:
    import inspect

    return "analytics_enabled" in inspect.signature(gradio_client.Client).parameters


def poll_until(c, predicate, timeout: float = 150.0):
    deadline = time.time() + timeout
    seen = {}
    while time.time() < deadline:
        result = c.predict("", api_name="/train_poll")
        names = ["status", "progress", "class_progress", "plot", "previews"]
        for name, value in zip(names, result[-5:] if len(result) > 5 else result):
            if value is not None and not (isinstance(value, dict) and value.get("__type__") == "update"):
                seen[name] = value
        if predicate(seen):
            return seen
        time.sleep(1.0)
    raise AssertionError(f"timed out; last seen: {seen}")


def inpaint_editor(folder: Path) -> dict:
    """The Inpaint tab's image editor value: a 64 px picture with a white square painted on its layer."""
    picture, layer = folder / "pic.png", folder / "layer.png"
    Image.new("RGB", (64, 64), (30, 120, 200)).save(picture)
    painted = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    painted.paste((255, 255, 255, 255), (16, 16, 48, 48))
    painted.save(layer)
    return {"background": handle_file(str(picture)), "layers": [handle_file(str(layer))],
            "composite": handle_file(str(picture))}


def test_full_flow(local_app, tmp_path):
    studio, url = local_app
    c = client(url)
    photos = make_photos(tmp_path / "photos")
    _, summary = c.predict("", [handle_file(str(p)) for p in photos], "object", 32, api_name="/curate_upload")
    assert "3 of 4 photos accepted" in summary and "broken.jpg" in summary

    check = c.predict("sks", "dog", api_name="/train_check")
    assert "sks" in check
    table = c.predict("", *train_args(), api_name="/train_explain")
    assert "| `max_steps` | 4 | set by you |" in table and "preset object-lora" in table

    c.predict("", *train_args(), api_name="/train_start")
    # a second run while one is active is refused with a warning, not a crash
    with pytest.raises(Exception, match="already have a run"):
        c.predict("", *train_args(), api_name="/train_start")

    seen = poll_until(c, lambda s: "previews" in s and s.get("plot") and "finished" in str(s.get("status", "")))
    plot = seen["plot"]
    frame = plot["value"] if isinstance(plot, dict) and "value" in plot else plot
    assert "step 4/4" in seen["progress"]
    assert seen["previews"] and "step" in str(seen["previews"])
    assert "class images 2/2" in seen["class_progress"]
    assert frame  # loss points arrived

    # reconnecting (a new client, same local user) re-attaches to the newest active run: none now, it finished
    run_id = studio.runs("local")[0].run_id
    model, _, prompt, _ = c.predict("", subject={}, api_name="/generate_refresh_all")
    assert model["value"] == f"run:{run_id}" and prompt == "a photo of sks dog"  # the last run's trigger phrase
    gallery, timing = c.predict("", f"run:{run_id}", "a photo of sks dog", "", "ddim", 2, 7.5, 3, 2, api_name="/generate")
    assert len(gallery) == 2 and "2 image(s)" in timing
    grid, _ = c.predict("", ["base", f"run:{run_id}"], "a photo of sks dog\nsks dog on the beach", "0, 1", "", "default",
                        2, 7.5, api_name="/compare")
    with Image.open(grid) as image:
        assert image.width > 64 and image.height > 4 * 32  # 2 models across, 2 prompts x 2 seeds down

    c.predict("", subject={}, api_name="/inpaint_models")
    original, result = c.predict("", f"run:{run_id}", inpaint_editor(tmp_path), None, "a photo of sks dog", 0.9, 2, 0, api_name="/inpaint")
    assert Path(result).is_file() and Path(original).is_file()

    table, _ = c.predict("", None, api_name="/runs_list")
    _, _, previews, downloads, labels, name, _ = c.predict("", run_id, api_name="/runs_show")
    names = sorted(Path(d).name for d in downloads)
    assert "pytorch_lora_weights.safetensors" in names and previews
    assert "for diffusers" in labels and "for A1111 / ComfyUI" in labels  # each download says what it is for
    assert name.startswith("sks dog · object-lora · ")  # a run is named for what it is unless the user names it
    assert all(str(studio.workspace.root) not in str(d) for d in downloads)  # copies, not workspace paths


def test_errors_are_warnings_not_crashes(local_app):
    _, url = local_app
    c = client(url)
    with pytest.raises(Exception, match="no photos yet"):
        c.predict("", *train_args(), api_name="/train_start")
    with pytest.raises(Exception, match="prompt is empty"):
        c.predict("", "base", "", "", "default", 2, 7.5, 0, 1, api_name="/generate")
    with pytest.raises(Exception, match="no run|not in the list of choices"):
        c.predict("", "r20990101-000000-abcdef", api_name="/runs_delete")
    with pytest.raises(Exception, match="upload a picture"):
        c.predict("", "base", None, None, "x", 0.9, 2, 0, api_name="/inpaint")


def test_shared_mode_isolates_users_and_reattaches(tiny_model, tmp_path):
    from studio.engine import Studio

    studio = Studio(root=tmp_path / "home", base_model=str(tiny_model), shared=True)
    demo, url = launch(studio)
    try:
        alice, bob = client(url), client(url)
        alice_id = alice.predict("", api_name="/hello")
        bob_id = bob.predict("", api_name="/hello")
        assert alice_id != bob_id and len(alice_id) >= 16
        photos = make_photos(tmp_path / "photos", 3)[:3]
        alice.predict(alice_id, [handle_file(str(p)) for p in photos], "object", 32, api_name="/curate_upload")
        alice.predict(alice_id, *train_args(max_steps=40, preview_every=0), api_name="/train_start")

        table, picker = bob.predict(bob_id, None, api_name="/runs_list")
        assert not table["data"] or table["data"] == [[None] * 4] or len(table["data"]) == 0
        with pytest.raises(Exception, match="no run|not in the list of choices"):
            bob.predict(bob_id, studio.runs(alice_user(studio))[0].run_id, api_name="/runs_delete")

        # a reload (a new client with the same browser id) re-attaches to the running job
        again = client(url)
        again.predict(alice_id, api_name="/train_attach")
        result = again.predict(alice_id, api_name="/train_poll")
        assert "(`r" in str(result) and "running" in str(result)  # the run, by its name and id
        again.predict(alice_id, api_name="/train_stop")
        deadline = time.time() + 90
        while studio.active_run(alice_user(studio)) and time.time() < deadline:
            time.sleep(0.5)
        assert studio.active_run(alice_user(studio)) is None
    finally:
        demo.close()


def alice_user(studio) -> str:
    users = [p.name for p in (studio.workspace.root / "users").iterdir()]
    owners = [u for u in users if studio.runs(u)]
    assert len(owners) == 1 and views.USER_ID.match(owners[0])
    return owners[0]


@pytest.mark.parametrize("adapter", ["locon", "dora", "lokr", "loha"])
def test_each_adapter_trains_from_the_train_tab(local_app, tmp_path, adapter):
    """The Advanced section's adapter field reaches the run: it trains, finishes, and says what its files are for."""
    studio, url = local_app
    c = client(url)
    c.predict("", [handle_file(str(p)) for p in make_photos(tmp_path / "photos")[:3]], "object", 32, api_name="/curate_upload")
    table = c.predict("", *train_args(adapter=adapter, max_steps=2, preview_every=0), api_name="/train_explain")
    assert f"| `adapter` | {adapter} |" in table  # object-lora's own is locon: "set by you" for the others
    c.predict("", *train_args(adapter=adapter, max_steps=2, preview_every=0), api_name="/train_start")
    poll_until(c, lambda s: "finished" in str(s.get("status", "")))
    run = studio.runs("local")[0]
    assert studio.run_config("local", run.run_id)["config"]["adapter"] == adapter
    labels = " ".join(d.label for d in studio.downloads("local", run.run_id))
    assert "A1111 / ComfyUI" in labels and (("load_lora_weights" in labels) == (adapter in ("locon", "dora")))


def test_two_subjects_train_together_from_the_train_tab(local_app, tmp_path):
    """More subjects: the second subject's photos, identifier and class noun join the run; both are taught and their
    losses drawn; a clash is refused with a warning before anything runs."""
    studio, url = local_app
    c = client(url)
    c.predict("", [handle_file(str(p)) for p in make_photos(tmp_path / "rex")[:3]], "object", 32, api_name="/curate_upload")
    other = [handle_file(str(p)) for p in make_photos(tmp_path / "tom")[:2]]
    with pytest.raises(Exception, match="own identifier"):
        c.predict("", other, "", "cat", api_name="/train_add_subject")
    table, _, _ = c.predict("", other, "zwx", "cat", api_name="/train_add_subject")  # the list is session state
    assert "| `zwx` | cat | 2 |" in table
    with pytest.raises(Exception, match="already in the list"):
        c.predict("", other, "zwx", "cat", api_name="/train_add_subject")
    before = len(studio.runs("local"))
    c.predict("", *train_args(max_steps=4, batch_size=2, preview_every=4), api_name="/train_start")
    seen = poll_until(c, lambda s: s.get("plot") and "finished" in str(s.get("status", "")))
    assert len(studio.runs("local")) == before + 1
    run_id = studio.runs("local")[0].run_id
    steps = [e for e in studio.events("local", run_id)[0] if e.kind == "step"]
    assert steps and all(set(s.subject_losses) == {"sks", "zwx"} for s in steps)
    plot = seen["plot"]
    frame = str(plot["value"] if isinstance(plot, dict) and "value" in plot else plot)
    assert "subject zwx" in frame and "subject sks" in frame  # each subject's loss is drawn
    config = studio.run_config("local", run_id)
    assert [s["identifier"] for s in config["subjects"]] == ["sks", "zwx"]


def test_the_whole_path_on_a_flux_base_model(tmp_path, tiny_flux):
    """FLUX.1 (the tiny one studio.world.flow_bases builds) from the page: upload, train a LoRA, generate, compare,
    inpaint, download; an SD sampler is refused by name, not drawn wrong."""
    from studio.engine import Studio

    studio = Studio(root=tmp_path / "home", base_model=str(tiny_flux))
    demo, url = launch(studio)
    try:
        c = client(url)
        c.predict("", [handle_file(str(p)) for p in make_photos(tmp_path / "photos")], "object", 64,
                  api_name="/curate_upload")
        c.predict("", *train_args(resolution=64, extra=FAST + "\npreview_guidance = 3.5"), api_name="/train_start")
        seen = poll_until(c, lambda s: "finished" in str(s.get("status", "")) and s.get("previews"))
        assert "step 4/4" in seen["progress"]
        run_id = studio.runs("local")[0].run_id
        c.predict("", subject={}, api_name="/generate_refresh_all")
        gallery, timing = c.predict("", f"run:{run_id}", "a photo of sks dog", "", "default", 2, 3.5, 3, 2,
                                    api_name="/generate")
        assert len(gallery) == 2 and "2 image(s)" in timing
        with pytest.raises(Exception, match="flow-matching sampler"):
            c.predict("", f"run:{run_id}", "a photo of sks dog", "", "ddim", 2, 3.5, 3, 1, api_name="/generate")
        grid, _ = c.predict("", ["base", f"run:{run_id}"], "a photo of sks dog", "0", "", "default", 2, 3.5,
                            api_name="/compare")
        assert Path(grid).is_file()
        c.predict("", subject={}, api_name="/inpaint_models")
        _, result = c.predict("", f"run:{run_id}", inpaint_editor(tmp_path), None, "a photo of sks dog", 0.9, 2, 0, api_name="/inpaint")
        with Image.open(result) as inpainted:
            assert inpainted.size == (64, 64)
        c.predict("", None, api_name="/runs_list")
        _, _, _, downloads, labels, _, _ = c.predict("", run_id, api_name="/runs_show")
        assert "pytorch_lora_weights.safetensors" in [Path(d).name for d in downloads]
        assert "ComfyUI: put it in `models/loras`" in labels and "kohya" not in labels
    finally:
        demo.close()
