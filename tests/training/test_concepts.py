"""Several subjects in one run: a concepts file, its validation, and a run that teaches two subjects at once.

What a user relies on: a mistake in the concepts file is named (which concept, which key) before anything is
written; the run deals both subjects evenly into its batches and reports each one's loss; previews show each
subject and each class; the run stops and resumes to the same weights like any other.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from studio.concepts import Concept, ConceptError, check_concepts, load_concepts
from studio.config import resolve_config
from studio.engine import Studio
from studio.events import read_events
from studio.training.commands import RunCommands
from studio.training.subjects import Subject, layout, row_owners
from tests.conftest import FAST, write_photos

SETTINGS = {"max_steps": 4, "preview_every": 4, "checkpoint_every": 2, "batch_size": 2, **FAST}


def _concepts_file(tmp_path, body: str):
    path = tmp_path / "concepts.toml"
    path.write_text(body)
    return path


def _two(tmp_path) -> str:
    write_photos(tmp_path / "rex", count=3)
    write_photos(tmp_path / "tom", count=2)
    return ('[[concept]]\nimages = "rex"\nidentifier = "sks"\nclass_noun = "dog"\n\n'
            '[[concept]]\nimages = "tom"\nidentifier = "zwx"\nclass_noun = "cat"\nclass_prompt = "a photo of a cat"\n')


@pytest.mark.parametrize("body, named", [
    ('[[concept]]\nimages = "rex"\nidentifier = "sks"\nclass_noun = "dog"\n[[concept]]\nimages = "tom"\n'
     'identifier = "zwx"\nclas_noun = "cat"\n', ["concept 2 (zwx)", "'clas_noun'", "class_noun"]),
    ('[[concept]]\nimages = "rex"\nidentifier = "sks"\nclass_noun = "dog"\n[[concept]]\nimages = "nowhere"\n'
     'identifier = "zwx"\nclass_noun = "cat"\n', ["concept 2 (zwx)", "images", "nowhere", "not a folder"]),
    ('[[concept]]\nimages = "rex"\nidentifier = "sks"\nclass_noun = "dog"\n[[concept]]\nimages = "tom"\n'
     'identifier = "SKS"\nclass_noun = "cat"\n', ["concept 2", "identifier", "concept 1's"]),
    ('[[concept]]\nimages = "rex"\nidentifier = "sks"\nclass_noun = "dog"\n[[concept]]\nimages = "tom"\n'
     'identifier = "dog"\nclass_noun = "cat"\n', ["concept 2 (dog)", "identifier", "concept 1's class_noun"]),
    ('[[concept]]\nimages = "rex"\nidentifier = "sks"\n', ["concept 1 (sks)", "class_noun is missing"]),
    ('[[concept]]\nidentifier = "sks"\nclass_noun = "dog"\n', ["concept 1 (sks)", "images is missing"]),
    ('[[concept]]\nimages = "rex"\nidentifier = "sks"\nclass_noun = "dog"\nwith_prior_preservation = "yes"\n',
     ["concept 1 (sks)", "with_prior_preservation", "true or false"]),
    ('[concept]\nimages = "rex"\n', ["no [[concept]] tables"]),
    ('style = 1\n[[concept]]\nimages = "rex"\nidentifier = "sks"\nclass_noun = "dog"\n', ["unknown key", "style"]),
])
def test_a_bad_concepts_file_names_the_concept_and_key_and_writes_nothing(tmp_path, tiny_sd, body, named):
    write_photos(tmp_path / "rex", count=3)
    write_photos(tmp_path / "tom", count=2)
    path = _concepts_file(tmp_path, body)
    studio = Studio(tmp_path / "home", base_model=str(tiny_sd))
    with pytest.raises(ConceptError) as refused:
        studio.train_folder(None, tmp_path / "run", ["object-lora"], dict(SETTINGS), concepts=load_concepts(path))
    for word in named:
        assert word in str(refused.value), (word, str(refused.value))
    assert not (tmp_path / "run").exists()  # nothing written before validation passed


def test_the_cli_says_what_is_wrong_in_the_concepts_file_without_a_traceback(tmp_path, tiny_sd):
    write_photos(tmp_path / "rex", count=3)
    path = _concepts_file(tmp_path, '[[concept]]\nimages = "rex"\nidentifier = "sks"\nclas_noun = "dog"\n')
    result = subprocess.run([sys.executable, "-m", "studio", "train", "--concepts", str(path), "--base-model",
                             str(tiny_sd), "--home", str(tmp_path / "home"), "--output", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "concept 1 (sks): unknown key 'clas_noun' (did you mean 'class_noun'?)" in result.stderr
    assert not (tmp_path / "run").exists()
    clash = subprocess.run([sys.executable, "-m", "studio", "train", "--concepts", str(path), "--identifier", "zwx",
                            "--output", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert clash.returncode != 0 and "drop --identifier" in clash.stderr


def test_concepts_that_cannot_train_together_are_refused_before_the_run(tmp_path, tiny_sd):
    config = resolve_config(["object-lora"], {"class_noun": "dog", "method": "textual_inversion"}).config
    with pytest.raises(ConceptError, match="one new token per run"):
        check_concepts([Concept("sks", "dog", images="a"), Concept("zwx", "cat", images="b")], config)
    studio = Studio(tmp_path / "home", base_model=str(tiny_sd))
    empty = tmp_path / "empty"
    empty.mkdir()
    write_photos(tmp_path / "rex")
    concepts = [Concept("sks", "dog", images=str(tmp_path / "rex")), Concept("zwx", "cat", images=str(empty))]
    with pytest.raises(ConceptError, match=r"concept 2 \(zwx\): images holds no photos"):
        studio.train_folder(None, tmp_path / "run", ["object-lora"], dict(SETTINGS), concepts=concepts)
    assert not (tmp_path / "run").exists()


def test_batches_deal_the_subjects_evenly_with_each_ones_class_rows():
    assert row_owners(0, 1, 2) + row_owners(1, 1, 2) + row_owners(2, 1, 2) == [0, 1, 0]  # batch 1: steps alternate
    assert [row_owners(m, 3, 2) for m in range(2)] == [[0, 1, 0], [1, 0, 1]]  # over two steps each gets 3 of 6 rows
    config = resolve_config(["object-lora"], {"class_noun": "dog"}).config
    a, b = Subject(config, []), Subject(Concept("zwx", "cat", with_prior_preservation=False).settings(config), [])
    plan = layout(0, 4, [a, b])
    assert plan.owners == [0, 1, 0, 1] and plan.pairs == [0, 2]  # only the subject that keeps its prior has class rows
    assert plan.mine([0, 1]) == [0, 1, 4]  # a process's rows carry the class rows of its own instance rows


def test_two_subjects_train_in_one_run_with_each_ones_loss_and_previews(tmp_path, tiny_sd):
    path = _concepts_file(tmp_path, _two(tmp_path))
    concepts = load_concepts(path)
    studio = Studio(tmp_path / "home", base_model=str(tiny_sd))
    outcome = studio.train_folder(None, tmp_path / "run", ["object-lora"], dict(SETTINGS), concepts=concepts)
    assert outcome.status == "finished"
    events = read_events(tmp_path / "run" / "events.jsonl")
    steps = [e for e in events if e.kind == "step"]
    assert all(set(s.subject_losses) == {"sks", "zwx"} for s in steps)  # batch 2: both subjects every step
    assert all(v > 0 and v == v for s in steps for v in s.subject_losses.values())
    class_phases = [e.detail for e in events if e.kind == "phase" and e.name == "class_images"]
    assert class_phases == ["a photo of a dog", "a photo of a cat"]  # each subject's own class prior
    last = [e for e in events if e.kind == "preview"][-1]
    assert set(last.prompts) == {"a photo of sks dog", "a photo of a dog", "a photo of zwx cat", "a photo of a cat"}
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["num_images"] == 5  # both subjects' photos count
    assert [(s["identifier"], s["photos"], s["class_prompt"]) for s in config["subjects"]] == [
        ("sks", 3, "a photo of a dog"), ("zwx", 2, "a photo of a cat")]
    card = (tmp_path / "run" / "output" / "README.md").read_text()
    assert "a photo of sks dog" in card and "a photo of zwx cat" in card


def test_a_two_subject_run_resumes_to_the_same_weights(tmp_path, tiny_sd):
    concepts = load_concepts(_concepts_file(tmp_path, _two(tmp_path)))
    settings = {**SETTINGS, "batch_size": 1, "max_steps": 5, "checkpoint_every": 3}  # batch 1: subjects alternate
    Studio(tmp_path / "home", base_model=str(tiny_sd)).train_folder(None, tmp_path / "a", ["object-lora"], settings,
                                                                   concepts=concepts)
    commands = RunCommands()
    stop = lambda e: commands.stop() if e.kind == "step" and e.step == 3 else None  # noqa: E731
    studio = Studio(tmp_path / "home", base_model=str(tiny_sd))
    assert studio.train_folder(None, tmp_path / "b", ["object-lora"], settings, concepts=concepts, emit=stop,
                               commands=commands).status == "cancelled"
    assert studio.train_folder(None, tmp_path / "b", resume=True).status == "finished"
    a, b = (load_file(str(tmp_path / run / "output" / "pytorch_lora_weights.safetensors")) for run in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [e for e in read_events(tmp_path / "a" / "events.jsonl") if e.kind == "step"]
    assert [list(s.subject_losses) for s in steps] == [["sks"], ["zwx"], ["sks"], ["zwx"], ["sks"]]
