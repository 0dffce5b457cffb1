"""Textual inversion and pivotal tuning: a new token learned from the photos, alone or with a LoRA.

What a user relies on: the run trains only what it says (the token's vectors; plus the LoRA for pivotal), resumes
to the same weights, and leaves files that diffusers' own loaders (and A1111's format) read, without ever touching
the base model's tokenizer on disk.
"""
from __future__ import annotations

import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors.torch import load_file

from studio.config import ConfigError, resolve_config
from studio.engine import Studio
from studio.events import read_events
from studio.inference.generate import DrawSettings
from tests.conftest import FAST
from tests.training.test_training import straight_and_resumed

SETTINGS = {"class_noun": "dog", "max_steps": 4, "checkpoint_every": 2, "preview_every": 4, "batch_size": 2,
            "num_vectors": 2, "embedding_learning_rate": 0.05, **FAST}


def _vocabulary(folder) -> set[str]:
    return set(StableDiffusionPipeline.from_pretrained(str(folder)).tokenizer.get_vocab())


def test_textual_inversion_trains_only_the_new_token_and_diffusers_loads_it(tmp_path, tiny_sd, photos):
    studio = Studio(tmp_path / "home", base_model=str(tiny_sd))
    outcome = studio.train_folder(photos, tmp_path / "run", ["object-lora"], {**SETTINGS, "method": "textual_inversion"})
    assert outcome.status == "finished"
    output = tmp_path / "run" / "output"
    trained = load_file(str(tmp_path / "run" / "checkpoints" / "step-000002" / "trainable.safetensors"))
    assert len(trained) == 1 and next(iter(trained)).endswith("token_embedding.vectors")  # nothing else trains
    assert trained[next(iter(trained))].shape[0] == 2  # num_vectors
    events = read_events(tmp_path / "run" / "events.jsonl")
    assert not [e for e in events if e.kind == "phase" and e.name == "class_images"]  # the prior could teach nothing
    assert any(e.kind == "notice" and "no class images are drawn" in e.message for e in events)

    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd))
    initial = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer("dog", add_special_tokens=False).input_ids]
    pipe.load_textual_inversion(str(output / "learned_embeds.safetensors"))  # diffusers' own loader, token from the file
    ids = pipe.tokenizer.convert_tokens_to_ids(["<sks>", "<sks>_1"])
    learned = pipe.text_encoder.get_input_embeddings().weight[ids]
    assert not torch.allclose(learned, initial.mean(0).expand_as(learned))  # moved from the class noun's embedding
    assert pipe.maybe_convert_prompt("a photo of <sks> dog", pipe.tokenizer) == "a photo of <sks> <sks>_1 dog"

    a1111 = load_file(str(output / "sks.safetensors"))
    assert list(a1111) == ["emb_params"] and torch.equal(a1111["emb_params"], learned.detach())
    assert "<sks>" not in _vocabulary(tiny_sd)  # the base model's tokenizer on disk is untouched
    from studio.downloads import run_downloads
    from studio.runs import RunFolder

    labels = {d.name: d.label for d in run_downloads(RunFolder(tmp_path / "run"), "sks-dog", token="<sks>")}
    assert "load_textual_inversion" in labels["learned_embeds.safetensors"] and "<sks>" in labels["learned_embeds.safetensors"]
    assert "embeddings" in labels["sks.safetensors"] and "whole model" not in labels["sks.safetensors"]
    card = (output / "README.md").read_text()
    assert "load_textual_inversion" in card and "a photo of <sks> dog" in card
    assert "learning rate: the token's 2 vector(s) at 0.05" in card  # the rate the vectors trained at

    drawn = studio.generate("local", str(tmp_path / "run"), DrawSettings("a photo of <sks> dog", steps=2, seed=1))
    base = studio.generate("local", "base", DrawSettings("a photo of <sks> dog", steps=2, seed=1))
    assert not torch.equal(torch.tensor(list(drawn.images[0].getdata())), torch.tensor(list(base.images[0].getdata())))
    again = studio.generate("local", "base", DrawSettings("a photo of <sks> dog", steps=2, seed=1))
    assert list(again.images[0].getdata()) == list(base.images[0].getdata())  # the token never leaked into the base


def test_textual_inversion_resumes_to_the_same_vectors(tmp_path, tiny_sd, photos):
    a, b = straight_and_resumed(tmp_path, tiny_sd, photos, {**SETTINGS, "method": "textual_inversion"}, stop_at=2)
    first, second = (load_file(str(run / "output" / "learned_embeds.safetensors")) for run in (a, b))
    assert torch.equal(first["<sks>"], second["<sks>"])


def test_pivotal_tuning_trains_token_and_lora_and_both_load_together(tmp_path, tiny_sd, photos):
    a, b = straight_and_resumed(tmp_path, tiny_sd, photos, {**SETTINGS, "method": "pivotal"}, stop_at=2)
    for name in ("learned_embeds.safetensors", "pytorch_lora_weights.safetensors"):
        first, second = load_file(str(a / "output" / name)), load_file(str(b / "output" / name))
        assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd))
    pipe.load_lora_weights(str(a / "output"), weight_name="pytorch_lora_weights.safetensors")
    pipe.load_textual_inversion(str(a / "output" / "learned_embeds.safetensors"))
    assert "<sks>_1" in pipe.tokenizer.get_vocab() and pipe.get_active_adapters()
    assert "load_lora_weights" in (a / "output" / "README.md").read_text()


def test_sdxl_textual_inversion_writes_one_tensor_per_text_encoder(tmp_path, tiny_sdxl, photos):
    from studio.models.embeddings import load_into_pipeline

    studio = Studio(tmp_path / "home", base_model=str(tiny_sdxl))
    settings = {**SETTINGS, "method": "textual_inversion", "num_vectors": 1, "max_steps": 2, "checkpoint_every": 0}
    assert studio.train_folder(photos, tmp_path / "run", ["object-lora"], settings).status == "finished"
    state = load_file(str(tmp_path / "run" / "output" / "learned_embeds.safetensors"))
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl))
    assert sorted(state) == ["clip_g", "clip_l"]
    assert state["clip_l"].shape[1] == pipe.text_encoder.config.hidden_size
    assert state["clip_g"].shape[1] == pipe.text_encoder_2.config.hidden_size
    assert load_into_pipeline(pipe, tmp_path / "run" / "output" / "learned_embeds.safetensors") == "<sks>"
    assert "<sks>" in pipe.tokenizer.get_vocab() and "<sks>" in pipe.tokenizer_2.get_vocab()


def test_token_settings_are_checked_with_the_fix_named():
    with pytest.raises(ConfigError, match=r"identifier = 'my dog'.*use identifier = 'my_dog' \(prompts then say <my_dog>\)"):
        resolve_config(["object-lora"], {"method": "textual_inversion", "identifier": "my dog", "class_noun": "dog"})
    with pytest.raises(ConfigError, match="train_text_encoder: textual inversion trains only the new token"):
        resolve_config([], {"method": "textual_inversion", "train_text_encoder": True, "class_noun": "dog"})
    from studio.runs import a1111_embedding_file

    assert a1111_embedding_file("<sks>") == "sks.safetensors"
    assert a1111_embedding_file("<learned_embeds>") == "learned_embeds-a1111.safetensors"  # never over the run's own
    with pytest.raises(ConfigError, match="num_vectors = 3 is textual inversion's"):
        resolve_config([], {"num_vectors": 3, "class_noun": "dog"})
    config = resolve_config([], {"method": "pivotal", "class_noun": "dog"}).config
    assert config.resolved_instance_prompt == "a photo of <sks> dog"  # prompts name the new token


def test_compare_methods_puts_each_methods_run_of_the_subject_side_by_side(tmp_path, tiny_sd, photos):
    """Runs tab's "Compare methods": the base model and the newest finished run of each method for the same
    subject, one prompt for all (the plain identifier becomes a learned token's "<sks>")."""
    from studio.inference.models import ModelRef

    studio = Studio(tmp_path / "home", base_model=str(tiny_sd))
    settings = {**SETTINGS, "checkpoint_every": 0, "max_steps": 2, "num_vectors": 1, "preview_every": 0}
    for method in ("lora", "textual_inversion"):
        dataset = studio.photos.add("local", sorted(photos.iterdir()))
        studio.start_training("local", dataset, ["object-lora"], {**settings, "method": method})
        assert studio.jobs.wait_idle(timeout=300)
    studio.start_training("local", dataset, ["object-lora"], {**settings, "class_noun": "cat"})
    assert studio.jobs.wait_idle(timeout=300)  # another subject: not compared
    ti_run = next(r.run_id for r in studio.runs("local")  # (runs started within a second have no set order)
                  if studio.run_config("local", r.run_id)["config"]["method"] == "textual_inversion")
    assert len(studio.method_runs("local", ti_run)) == 2
    result = studio.compare_methods("local", ti_run, DrawSettings("x", steps=2), seeds=[0])
    assert [label.split(" | ")[0] for label in result.labels[:3]] == ["base model", "textual inversion", "LoRA"]
    assert len(result.images) == 3 * 3  # three models across, the subject / a new place / its class down
    base, learned = result.images[0], result.images[1]
    assert list(base.getdata()) != list(learned.getdata())  # "sks" was asked as the learned "<sks>"
    assert ModelRef("k", "l", None, token="<sks>").spoken("a photo of sks dog, sks!") == "a photo of <sks> dog, <sks>!"
    assert ModelRef("k", "l", None, token="<sks>").spoken("a photo of <sks> dog") == "a photo of <sks> dog"
