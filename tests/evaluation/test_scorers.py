"""The two scorers, data in and numbers out: the world's judge on rendered scenes, DINOv2 + CLIP on tiny models."""
from __future__ import annotations

import math

import pytest
from PIL import Image

from studio.config import TrainConfig
from studio.evaluation.embedding import EmbeddingScorer
from studio.evaluation.prompts import eval_prompts
from studio.evaluation.scores import Drawn, EvalImages, ScorerUnavailable
from studio.evaluation.world import WorldScorer
from studio.world.demo import TRAINING_VIEWS, demo_scene
from studio.world.render import Scene, render
from tests.evaluation.tiny_scorers import build_tiny_clip, build_tiny_dino

CONFIG = TrainConfig(identifier="sks", class_noun="star")
PROMPTS = eval_prompts(CONFIG, world=True)
PHOTOS = [render(demo_scene(*view), 31_000 + i) for i, view in enumerate(TRAINING_VIEWS)]
PLAIN_STARS = [Scene("star", c, "white") for c in ("red", "blue", "green", "yellow")]


def _drawn(prompts, scenes):
    """Pictures as if a model drew `scenes` for `prompts` (one per prompt and seed, in order)."""
    pairs = [(p, s) for p in prompts for s in PROMPTS.seeds]
    return tuple(Drawn(p, s, render(scene, 7 + i)) for i, ((p, s), scene) in enumerate(zip(pairs, scenes)))


def _images(subject_scenes, recontext_scenes, class_scenes):
    return EvalImages(PROMPTS, _drawn(PROMPTS.subject, subject_scenes), _drawn(PROMPTS.recontext, recontext_scenes),
                      _drawn(PROMPTS.classes, class_scenes))


def test_world_scorer_reads_a_learned_subject_and_a_class_that_kept_its_variety():
    learned = [demo_scene(background=bg) for bg in ("white", "white", "black", "black", "pink", "pink")]
    recontext = [Scene("star", "red", "gray", "small", marking=True)] * 2 + [Scene("star", "blue", "white", marking=True)] * 2
    scores = WorldScorer("star").score(_images(learned, recontext, PLAIN_STARS), PHOTOS)
    assert (scores.subject_fidelity, scores.prompt_fidelity, scores.drift) == (1.0, 1.0, 0.0)
    assert scores.diversity > 0.3  # four colours: every pair differs in colour


def test_world_scorer_sees_drift_and_lost_context_in_an_overtrained_model():
    subject = [demo_scene()] * 6
    ignores_context = [demo_scene()] * 4  # always the training look: never small, never blue, never on gray
    class_became_subject = [demo_scene()] * 4
    scores = WorldScorer("star").score(_images(subject, ignores_context, class_became_subject), PHOTOS)
    assert scores.subject_fidelity == 1.0 and scores.prompt_fidelity == 0.0
    assert scores.drift == 1.0 and scores.diversity == 0.0


def test_world_scorer_generalises_to_an_unmarked_subject_of_another_class():
    config = TrainConfig(identifier="zwx", class_noun="circle")
    prompts = eval_prompts(config, world=True)
    photos = [render(Scene("circle", "green", bg), i) for i, bg in enumerate(("white", "gray", "pink"))]
    pairs = prompts.pairs()
    drawn = {p: render(Scene("circle", "green", "black"), i) for i, p in enumerate(pairs)}
    images = EvalImages(prompts, *(tuple(Drawn(p, s, drawn[(p, s)]) for p in group for s in prompts.seeds)
                                   for group in (prompts.subject, prompts.recontext, prompts.classes)))
    scores = WorldScorer("circle").score(images, photos)
    assert scores.subject_fidelity == 1.0 and scores.drift == 1.0  # every class picture is the green circle


def test_world_scorer_says_why_it_cannot_score_what_its_world_does_not_hold():
    with pytest.raises(ScorerUnavailable, match="knows only circle"):
        WorldScorer("dog").prepare()
    noise = [Image.new("RGB", (64, 64), (128, 128, 128))] * 3
    with pytest.raises(ScorerUnavailable, match="cannot read a star"):
        WorldScorer("star").score(_images([demo_scene()] * 6, [demo_scene()] * 4, PLAIN_STARS), noise)


@pytest.fixture(scope="module")
def tiny_scorer_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("scorers")
    return str(build_tiny_dino(root / "dino")), str(build_tiny_clip(root / "clip"))


def test_embedding_scorer_runs_end_to_end_offline_and_repeats_its_numbers(tiny_scorer_models):
    prompts = eval_prompts(TrainConfig(identifier="sks", class_noun="dog"), world=False)
    picture = lambda i: render(Scene("star", ["red", "blue", "green", "yellow"][i % 4], "white"), i)
    pairs = iter(range(100))
    images = EvalImages(prompts, *(tuple(Drawn(p, s, picture(next(pairs))) for p in group for s in prompts.seeds)
                                   for group in (prompts.subject, prompts.recontext, prompts.classes)))
    first = EmbeddingScorer(tiny_scorer_models).score(images, PHOTOS)
    again = EmbeddingScorer(tiny_scorer_models).score(images, PHOTOS)  # a fresh load: same numbers
    assert first == again
    for value in (first.subject_fidelity, first.prompt_fidelity, first.drift, first.diversity, first.extra["clip_i"]):
        assert 0.0 <= value <= 1.0 and not math.isnan(value)
    same = EvalImages(prompts, images.subject, images.recontext, (images.classes[0],) * 2)
    assert EmbeddingScorer(tiny_scorer_models).score(same, PHOTOS).diversity == pytest.approx(0.0, abs=1e-6)


def test_an_unloadable_scorer_model_is_one_line_naming_the_setting():
    with pytest.raises(ScorerUnavailable) as info:
        EmbeddingScorer(["nobody/no-such-dino", "nobody/no-such-clip"]).prepare()
    message = str(info.value)
    assert "\n" not in message and "nobody/no-such-dino" in message
    assert "scorer_models" in message and "--scorer-model" in message
