"""Every adapter type trains, checkpoints, resumes exactly and exports files its loaders read."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from studio.config import TrainConfig
from studio.engine import Studio
from studio.events import read_events
from studio.models.families import load_components
from studio.models.sources import resolve_source
from studio.training.commands import RunCommands
from studio.training.trainable import AdapterSettingError, prepare_trainable
from tests.conftest import FAST
from tests.training.test_training import straight_and_resumed

ADAPTERS = ["lora", "locon", "dora", "lokr", "loha"]
SETTINGS = {"class_noun": "dog", "max_steps": 2, "preview_every": 5, "checkpoint_every": 1, "learning_rate": 1e-3,
            "train_text_encoder": True, **FAST}


def _files(folder):
    return {p.name: load_file(str(p)) for p in sorted(folder.glob("*.safetensors"))}


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_adapter_trains_checkpoints_resumes_exactly_and_exports(tmp_path, tiny_sd, photos, adapter):
    straight_and_resumed(tmp_path, tiny_sd, photos, {**SETTINGS, "adapter": adapter}, stop_at=1)

    a, b = _files(tmp_path / "a" / "output"), _files(tmp_path / "b" / "output")
    assert set(a) == set(b) == {"pytorch_lora_weights.safetensors", "sks-dog-kohya.safetensors"}
    for name in a:  # the resumed run ends with exactly the uninterrupted run's weights, in both files
        assert a[name].keys() == b[name].keys() and all(torch.equal(a[name][k], b[name][k]) for k in a[name])
    resumed = [e.resumed_from for e in read_events(tmp_path / "b" / "events.jsonl") if e.kind == "started"]
    assert resumed == [0, 1]


def test_resuming_with_another_adapter_is_refused(tmp_path, tiny_sd, photos):
    import dataclasses

    from studio.runs import RunFolder

    commands = RunCommands()
    stop_after_one = lambda e: commands.stop() if e.kind == "step" and e.step == 1 else None
    studio = Studio(tmp_path / "home", base_model=str(tiny_sd))
    settings = {**SETTINGS, "train_text_encoder": False}
    assert studio.train_folder(photos, tmp_path / "run", ["object-lora"], {**settings, "adapter": "lora"},
                               emit=stop_after_one, commands=commands).status == "cancelled"
    run = RunFolder(tmp_path / "run")
    meta = run.read_meta()  # the run's settings changed behind its back: LoKr this time
    run.write_meta(dataclasses.replace(meta, overrides={**meta.overrides, "adapter": "lokr"}))
    with pytest.raises(AdapterSettingError, match=r"holds adapter = 'lora' weights.*start a new run"):
        studio.train_folder(photos, tmp_path / "run", resume=True)


@pytest.mark.parametrize("overrides, named", [
    ({"lora_rank": 0}, "lora_rank = 0 is out of range; allowed 1 to 256"),
    ({"adapter": "lycoris"}, "adapter = 'lycoris' is not allowed; use one of: lora, locon, dora, lokr, loha"),
])
def test_settings_no_adapter_can_take_are_refused_before_training(tmp_path, overrides, named):
    from studio.config import ConfigError

    with pytest.raises(ConfigError, match=re.escape(named)):
        Studio(tmp_path / "home").resolve(["object-lora"], overrides, num_images=1)


@pytest.mark.parametrize("overrides, named", [
    ({"adapter": "lora", "conv_rank": 4}, 'conv_rank / conv_alpha apply to adapter = "locon" only'),
    ({"adapter": "dora", "conv_alpha": 2.0}, 'conv_rank / conv_alpha apply to adapter = "locon" only'),
    ({"adapter": "lokr", "lora_dropout": 0.1}, "lora_dropout = 0.1 is LoRA's dropout; peft's lokr has none"),
])
def test_settings_the_adapter_cannot_honour_name_the_setting(tiny_sd, overrides, named):
    comps = load_components(resolve_source(str(tiny_sd)))
    with pytest.raises(AdapterSettingError, match=re.escape(named)):
        prepare_trainable(comps, TrainConfig(**{"method": "lora", **overrides}))
    assert not any(p.requires_grad for p in comps.denoiser.parameters())  # refused before anything was made trainable


def test_an_adapter_the_installed_peft_lacks_is_refused(tiny_sd, monkeypatch):
    import peft

    monkeypatch.delattr(peft, "LoKrConfig")
    comps = load_components(resolve_source(str(tiny_sd)))
    with pytest.raises(AdapterSettingError, match=r"adapter = 'lokr' needs a newer peft .* use one of: lora, locon, dora, loha"):
        prepare_trainable(comps, TrainConfig(method="lora", adapter="lokr"))


def test_locon_on_a_unet_without_resnet_convolutions_is_refused(tiny_sd, monkeypatch):
    comps = load_components(resolve_source(str(tiny_sd)))
    monkeypatch.setattr(comps.family, "conv_targets", ("no_such_conv",))  # a family whose UNet has none
    with pytest.raises(AdapterSettingError, match=r'adapter = "locon" adapts .* has none .* use adapter = "lora"'):
        prepare_trainable(comps, TrainConfig(method="lora", adapter="locon"))


def test_studio_draws_with_every_adapter_type_and_switches_without_leaking(tmp_path, tiny_sd, photos):
    """Generate / Compare / Inpaint with LoKr (a base of its own) and DoRA (an adapter in the shared base), by two users."""
    import time

    from PIL import Image

    from studio.inference.generate import DrawSettings

    studio = Studio(tmp_path / "home", base_model=str(tiny_sd))
    runs = {}
    for user, adapter in (("alice", "lokr"), ("bob", "dora"), ("carol", "loha"), ("dave", "locon")):
        dataset = studio.photos.add(user, sorted(photos.iterdir()))
        runs[user] = studio.start_training(user, dataset, ["object-lora"], {
            **SETTINGS, "adapter": adapter, "train_text_encoder": adapter == "lokr", "learning_rate": 1e-2,
            "max_steps": 3, "checkpoint_every": 0})
    for user, run_id in runs.items():
        deadline = time.time() + 300
        while studio.run_state(user, run_id).status not in ("finished", "failed", "cancelled") and time.time() < deadline:
            time.sleep(0.2)
        assert studio.run_state(user, run_id).status == "finished"
    settings = DrawSettings("a photo of sks dog", steps=2, seed=3)
    pixels = lambda result: np.asarray(result.images[0], float)
    base = pixels(studio.generate("alice", "base", settings))
    drawn = {user: pixels(studio.generate(user, f"run:{run_id}", settings)) for user, run_id in runs.items()}
    for user, image in drawn.items():
        assert np.abs(image - base).max() > 2, f"{user}'s adapter changed nothing"
    # switching back and forth: each model draws exactly as before, and no adapter stays on for the next caller
    assert np.abs(pixels(studio.generate("bob", "base", settings)) - base).max() <= 2
    for user, run_id in runs.items():
        assert np.abs(pixels(studio.generate(user, f"run:{run_id}", settings)) - drawn[user]).max() <= 2
    assert np.abs(pixels(studio.generate("carol", "base", settings)) - base).max() <= 2
    grid = studio.compare("alice", ["base", f"run:{runs['alice']}"], ["a photo of sks dog"], settings, [3])
    assert np.abs(np.asarray(grid.images[0], float) - base).max() <= 2
    assert np.abs(np.asarray(grid.images[1], float) - drawn["alice"]).max() <= 2
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    for user in ("alice", "bob"):
        painted = studio.inpaint(user, f"run:{runs[user]}", Image.fromarray(base.astype(np.uint8)), mask, settings)
        assert painted.images[0].size == (32, 32)


@pytest.mark.parametrize("adapter", ["dora", "lokr", "loha"])
def test_adapter_trains_in_bf16_with_gradient_checkpointing(tmp_path, tiny_sd, photos, adapter):
    """The frozen base in bf16, the adapter in fp32: peft's DoRA norm and LoKr / LoHa products must mix them."""
    settings = {**SETTINGS, "adapter": adapter, "mixed_precision": "bf16", "gradient_checkpointing": True,
                "checkpoint_every": 0}
    outcome = Studio(tmp_path / "home", base_model=str(tiny_sd)).train_folder(photos, tmp_path / "run", ["object-lora"], settings)
    assert outcome.status == "finished"
    steps = [e for e in read_events(tmp_path / "run" / "events.jsonl") if e.kind == "step"]
    assert len(steps) == 2 and all(torch.isfinite(torch.tensor(s.instance_loss)) for s in steps)
