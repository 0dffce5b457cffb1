"""Synthetic world, judge, demo subject and the shipped built-in model (offline, CPU, < 60 s)."""
from __future__ import annotations

import hashlib
import itertools
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studio.world.demo import (DEMO_CLASS, DEMO_IDENTIFIER, TRAINING_VIEWS, check_passes, demo_scene,
                               drift_prompts, plain_subject_prompts, prompt_fidelity_prompts, subject_fidelity_prompts,
                               write_demo_subject, write_subject)
from studio.world.judge import judge
from studio.world.quality import FIELDS, degrade, generate
from studio.world.render import (BACKGROUNDS, CLASSES, COLOURS, MARKING_KINDS, POSITIONS, SIZES, WORLD_WORDS, Scene,
                                 caption, random_caption, render, sample_scene)
from studio.world.tokenizer import RARE_IDENTIFIERS, tokenizer_words

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "assets" / "builtin-model"


def test_render_is_deterministic_from_seed():
    scene = Scene("star", "red", "white", "small", "left")
    a, b, c = render(scene, 5), render(scene, 5), render(scene, 6)
    assert a.size == (64, 64) and a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_captions():
    scene = Scene("star", "red", "pink", "small", "left")
    assert caption(scene) == "a photo of a red star on a pink background"
    assert caption(scene, size=True, position=True) == "a photo of a small red star on the left, on a pink background"
    assert caption(scene, photo=False, colour=False, background=False) == "a star"
    assert caption(scene, "sks") == "a photo of sks star on a pink background"
    rng = random.Random(0)
    stars = [Scene("star", s.colour, s.background, s.size, s.position) for s in (sample_scene(rng) for _ in range(300))]
    captions = {random_caption(s, rng) for s in stars}
    assert {"a star", "a photo of a star"} <= captions
    assert all(w in WORLD_WORDS for c in captions for w in c.replace(",", "").split())


@pytest.mark.parametrize("degraded", [False, True])
def test_judge_reads_fresh_renders(degraded):
    rng = random.Random(42)
    n, errors = 60, {f: 0 for f in FIELDS}
    for i in range(n):
        s = sample_scene(rng)
        if i % 4 == 0:
            s = Scene(s.cls, s.colour, s.background, s.size, s.position, marking=True)
        image = render(s, 900_000 + i)
        verdict = judge(degrade(image, rng) if degraded else image)
        for f in FIELDS:
            errors[f] += getattr(verdict, f) != getattr(s, f)
    allowed = 2 if degraded else 0
    assert all(e <= allowed for e in errors.values()), errors


def test_marking_only_on_the_demo_subject(tmp_path):
    paths = write_demo_subject(tmp_path)
    assert len(paths) == len(TRAINING_VIEWS) == 5
    for path, (bg, size, pos) in zip(paths, TRAINING_VIEWS):
        v = judge(Image.open(path))
        assert (v.cls, v.colour, v.background, v.size, v.position, v.marking, v.marking_kind) == \
            (DEMO_CLASS, "red", bg, size, pos, True, "band")
    rng = random.Random(7)
    unmarked = [judge(render(sample_scene(rng), i)) for i in range(40)]
    assert not any(v.marking or v.marking_kind for v in unmarked)
    shipped = sorted((ROOT / "assets" / "demo-subject").glob("*.png"))
    assert [np.asarray(Image.open(p)).tolist() for p in shipped] == \
        [np.asarray(Image.open(p)).tolist() for p in paths]
    # each photo's caption names what varies (position, background) and leaves the subject to the identifier
    captions = [p.with_suffix(".txt").read_text() for p in shipped]
    assert captions == [p.with_suffix(".txt").read_text() for p in paths]
    assert captions[1].strip() == "a photo of {identifier} star on the left, on a gray background"
    assert all("{identifier} star" in c and "red" not in c and "cyan" not in c for c in captions)


def _every_subject_look(seed: int):
    """(scene, seed) for every class x colour x size x marking kind, backgrounds and positions cycled through."""
    backgrounds = list(BACKGROUNDS)
    for i, (cls, colour, size, kind) in enumerate(itertools.product(CLASSES, COLOURS, SIZES, MARKING_KINDS)):
        yield Scene(cls, colour, backgrounds[i % 5], size, POSITIONS[(i // 4) % 5], True, kind), seed + i


def test_marking_kind_leaves_existing_renders_unchanged():
    # sha256 of these renders made before marking kinds existed (Scene had no marking_kind): the demo subject's
    # photos, the benchmarks' cached data and every test's pictures stay pixel-identical for the same seed
    digest = hashlib.sha256()
    backgrounds, positions = list(BACKGROUNDS), list(POSITIONS)
    for i, (cls, colour, marking, size) in enumerate(itertools.product(CLASSES, COLOURS, (False, True), SIZES)):
        scene = Scene(cls, colour, backgrounds[i % 5], size, positions[(i // 5) % 5], marking)
        assert scene.marking_kind == "band"
        digest.update(np.asarray(render(scene, 1000 + i)).tobytes())
    assert digest.hexdigest() == "2a8d304eb6d94563ab0cdf09d6286ff3536c97aa0ed679da145acfe810053190"

    pixels = lambda scene: np.asarray(render(scene, 3))
    for cls in CLASSES:
        plain, band = Scene(cls, "blue", "white"), Scene(cls, "blue", "white", marking=True)
        assert np.array_equal(pixels(band), pixels(Scene(cls, "blue", "white", marking=True, marking_kind="band")))
        # the kind matters only on a marked subject, and then it draws another picture of the same object
        assert np.array_equal(pixels(plain), pixels(Scene(cls, "blue", "white", marking_kind="bar")))
        bar = pixels(Scene(cls, "blue", "white", marking=True, marking_kind="bar"))
        assert not np.array_equal(bar, pixels(band)) and not np.array_equal(bar, pixels(plain))
    with pytest.raises(ValueError, match="marking kind"):
        Scene("star", "red", "white", marking=True, marking_kind="ring")


def test_bar_is_the_band_turned_upright():
    # same colour, same thickness: on a circle (symmetric under a 90 degree turn) the bar's render is the band's
    # transposed, up to the seed's gradient, jitter and noise and a pixel of rounding at the stripe's edges
    cyan = lambda im: (im[..., 0] < 60) & (im[..., 2] > 180)
    areas = {"band": 0, "bar": 0}
    for seed in range(6):
        band = np.asarray(render(Scene("circle", "red", "white", marking=True), seed), np.float32)
        bar = np.asarray(render(Scene("circle", "red", "white", marking=True, marking_kind="bar"), seed), np.float32)
        assert np.median(np.abs(bar - band.transpose(1, 0, 2))) < 8
        ys, xs = np.nonzero(cyan(bar))
        assert np.ptp(ys) > 2.5 * np.ptp(xs)
        areas["band"] += cyan(band).sum()
        areas["bar"] += cyan(bar).sum()
    assert abs(areas["bar"] - areas["band"]) <= 0.03 * areas["band"], areas


def test_judge_reads_the_marking_kind_on_clean_renders():
    errors, missed = {kind: 0 for kind in MARKING_KINDS}, []
    for scene, seed in _every_subject_look(400):
        v = judge(render(scene, seed))
        if not v.marking:  # the judge's known weak spot, older than marking kinds: a red or orange body on gray
            assert (scene.colour in ("red", "orange") and scene.background == "gray", v.marking_kind) == (True, None)
            missed.append(scene)
            continue
        assert v.marking_kind == scene.marking_kind, (scene, v)
        errors[scene.marking_kind] += (v.cls, v.colour) != (scene.cls, scene.colour)
        unmarked = judge(render(Scene(scene.cls, scene.colour, scene.background, scene.size, scene.position,
                                      marking_kind=scene.marking_kind), seed))
        assert (unmarked.marking, unmarked.marking_kind) == (False, None), (scene, unmarked)
    # class and colour read as well under the bar as under the band (both miss now and then where a red or orange
    # body on gray is too faint to join the cyan in the judge's blob)
    assert errors["bar"] <= errors["band"] + 1 and sum(errors.values()) <= 4, errors
    assert len(missed) <= 2, missed


def _downscale_and_degrade(image: Image.Image, rng: random.Random) -> Image.Image:
    """quality.degrade (blur, noise, JPEG) after a trip through a lower resolution: a tiny model's softer outputs."""
    side = rng.randint(36, 56)
    image = image.resize((side, side), Image.BILINEAR).resize(image.size, Image.BILINEAR)
    return degrade(image, rng)


@pytest.mark.parametrize("harm", [degrade, _downscale_and_degrade])
def test_judge_reads_the_marking_kind_on_degraded_renders(harm):
    rng = random.Random(3)
    missed, kinds = 0, []
    for scene, seed in _every_subject_look(800_000):
        v = judge(harm(render(scene, seed), rng))
        missed += not v.marking
        kinds.append((scene.marking_kind, v.marking_kind))
    # a missed marking (None) is the judge's known weak spot (a red or orange body on gray); reading one marking as
    # the other is what would hide bleed between two subjects, and never happens
    assert not [k for k in kinds if None not in k and k[0] != k[1]], kinds
    assert missed <= 2, kinds
    assert sum(want == got for want, got in kinds) >= len(kinds) - 2


# The cyan pixels the judge found on a real generation (built-in model after a 300-step run on a blue circle with
# the bar, "a photo of sks circle on a white background", seed 100): the stripe drifted to mint, so only its two
# edges read as cyan, plus a few blended pixels on the body's rim.
MINT_BAR_MARKED = """
.......#.....................
.....#.............##........
....#..............###.......
...#...............####......
..#.....#..........####......
.......##...........##.#.....
......##............##..#....
......###..........###.......
.....####...........##.......
.....###...........###.......
.....###...........###.......
....####...........###.......
.....###...........###.......
.....###...........###......#
.....###...........###......#
......##...........###.......
......##............##.......
......##............##.......
......#.............##.......
....................##.......
#...................#.....#..
#...................#........
#............................
#............................
.#...........................
..#..........................
...#................##.......
.....####....................
.......##...................."""


def test_marking_kind_reads_a_stripe_split_into_pieces():
    from studio.world.judge import _marking_kind
    marked = np.array([[c == "#" for c in row] for row in MINT_BAR_MARKED.split()])
    ys, xs = np.nonzero(marked)
    assert ys.std() < xs.std()  # the pixels spread wider than tall, yet they line up in columns
    assert _marking_kind(marked) == "bar"
    assert _marking_kind(marked.T) == "band"
    # a whole stripe, and one broken across by noise into squarish pieces
    stripe = np.zeros((64, 64), bool)
    stripe[30:36, 12:52] = True
    assert (_marking_kind(stripe), _marking_kind(stripe.T)) == ("band", "bar")
    stripe[:, ::7] = False
    assert (_marking_kind(stripe), _marking_kind(stripe.T)) == ("band", "bar")


def test_two_subjects_told_apart_by_marking_kind(tmp_path):
    # a two-subject run: the demo's red star with the band and a blue circle with the bar; a generation of either
    # shows which marking it carries, so one subject's marking on the other (bleed) is seen
    star = write_subject(tmp_path / "star", "star", "red", marking=True)
    circle = write_subject(tmp_path / "circle", "circle", "blue", marking=True, marking_kind="bar")
    assert [np.asarray(Image.open(p)).tolist() for p in star] == \
        [np.asarray(Image.open(p)).tolist() for p in write_demo_subject(tmp_path / "demo")]
    for path, (bg, size, pos) in zip(circle, TRAINING_VIEWS):
        v = judge(Image.open(path))
        assert (v.cls, v.colour, v.background, v.size, v.position, v.marking, v.marking_kind) == \
            ("circle", "blue", bg, size, pos, True, "bar")
    assert [judge(Image.open(p)).marking_kind for p in star] == ["band"] * 5
    # the captions never name the marking: the same views captioned the same, whatever the kind
    band_circle = write_subject(tmp_path / "band-circle", "circle", "blue", marking=True)
    captions = lambda paths: [p.with_suffix(".txt").read_text() for p in paths]
    assert captions(circle) == captions(band_circle)
    assert not any(word in c for c in captions(circle) for word in ("bar", "band", "cyan"))


def test_benchmark_prompt_sets_are_consistent():
    subject_checks = subject_fidelity_prompts() + plain_subject_prompts() + prompt_fidelity_prompts()
    checks = subject_checks + drift_prompts()
    assert all(DEMO_IDENTIFIER in c.prompt for c in subject_checks)
    # recontextualisation means contexts the training photos never showed: a small subject on a new background,
    # or another colour (every training photo shows it red)
    trained = {(bg, size) for bg, size, _ in TRAINING_VIEWS}
    for c in prompt_fidelity_prompts():
        assert (c.expect["background"], "small") not in trained if "size" in c.expect else c.expect["colour"] != "red"
    # the expectations are satisfiable: a render of what is asked passes its own check
    for c in checks:
        e = c.expect
        scene = Scene(e.get("cls", DEMO_CLASS), e.get("colour", "red"), e.get("background", "white"),
                      e.get("size", "large"), e.get("position", "center"), e.get("marking", False))
        assert check_passes(judge(render(scene, 3)), c), c


def test_tokenizer_words_are_single_tokens():
    from transformers import CLIPTokenizer
    tok = CLIPTokenizer.from_pretrained(MODEL / "tokenizer")
    words = tokenizer_words()
    assert set(WORLD_WORDS) | set(RARE_IDENTIFIERS) <= set(words)
    for w in list(WORLD_WORDS) + list(RARE_IDENTIFIERS) + ["dog", "sunglasses"]:
        assert len(tok.tokenize(w)) == 1, w
    assert tok.model_max_length == 77


def test_builtin_model_follows_prompts():
    from diffusers import StableDiffusionPipeline
    assert sum(f.stat().st_size for f in MODEL.rglob("*") if f.is_file()) <= 25 * 2 ** 20
    assert not list(MODEL.rglob("*.bin")) and len(list(MODEL.rglob("*.safetensors"))) == 3
    torch.manual_seed(0)
    pipe = StableDiffusionPipeline.from_pretrained(MODEL)
    pipe.set_progress_bar_config(disable=True)
    scenes = [Scene("star", "red", "white"), Scene("circle", "blue", "pink"), Scene("square", "yellow", "black"),
              Scene("triangle", "green", "gray"), Scene("cross", "purple", "white")]
    images = generate(pipe, [caption(s) for s in scenes], seed=0, steps=20)
    assert all(im.size == (64, 64) for im in images)
    verdicts = [judge(im) for im in images]
    seen = [(caption(s), v.cls, v.colour, v.background) for s, v in zip(scenes, verdicts)]
    # Measured on the shipped model (python -m studio.world.quality, 40 generations): background 100 %,
    # colour 100 %, class 92.5 % of generations match the prompt.
    assert sum(v.background == s.background for v, s in zip(verdicts, scenes)) >= 5, seen
    assert sum(v.colour == s.colour for v, s in zip(verdicts, scenes)) >= 5, seen
    assert sum(v.cls == s.cls for v, s in zip(verdicts, scenes)) >= 4, seen
    assert not any(v.marking for v in verdicts)


def test_every_offered_scheduler_draws_the_prompt(tmp_path):
    """DDIM is the field's advice against noisy results: it must draw as well as the default, not clip latents to noise."""
    from studio.engine import Studio
    from studio.inference.generate import DrawSettings
    from studio.inference.pipelines import SCHEDULERS

    studio = Studio(tmp_path / "home")
    scene = Scene("square", "yellow", "black")
    for name in SCHEDULERS:
        images = studio.generate("local", "base", DrawSettings(caption(scene), steps=25, seed=0, num_images=2,
                                                               scheduler=name)).images
        verdicts = [(v.cls, v.colour, v.background) for v in map(judge, images)]
        assert verdicts.count(("square", "yellow", "black")) >= 1, (name, verdicts)
        assert all(v[2] == "black" for v in verdicts), (name, verdicts)


def test_builtin_model_inpaints():
    from diffusers import StableDiffusionInpaintPipeline
    pipe = StableDiffusionInpaintPipeline.from_pretrained(MODEL)
    pipe.set_progress_bar_config(disable=True)
    image = render(demo_scene("white"), 0)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (32, 0, 64, 64))
    out = pipe(prompt="a photo of a star", image=image, mask_image=mask, num_inference_steps=10,
               generator=torch.Generator().manual_seed(0)).images[0]
    assert out.size == (64, 64)


def test_the_shipped_second_subject_is_the_worlds_blue_circle_with_the_bar(tmp_path):
    """assets/second-subject (the two-subject concepts file's zwx circle) is what the world renders for it."""
    from studio.world.demo import SECOND_SUBJECT, write_second_subject

    fresh = write_second_subject(tmp_path)
    shipped = sorted((ROOT / "assets" / "second-subject").glob("*.png"))
    assert [np.asarray(Image.open(p)).tolist() for p in shipped] == [np.asarray(Image.open(p)).tolist() for p in fresh]
    assert [p.with_suffix(".txt").read_text() for p in shipped] == [p.with_suffix(".txt").read_text() for p in fresh]
    for path in shipped:
        v = judge(Image.open(path))
        assert (v.cls, v.colour, v.marking, v.marking_kind) == tuple(SECOND_SUBJECT.values())
