"""The demo subject DreamBooth learns, and the prompt sets the benchmarks judge.

The subject is one specific red star with a cyan stripe across its middle. The
base model knows red stars but has never seen the stripe (no base-world render
has it), so only a successful DreamBooth run can draw it: the judge's `marking`
field tells subject from class.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from studio.world.render import BACKGROUNDS, Scene, caption, render

DEMO_CLASS = "star"
DEMO_COLOUR = "red"
DEMO_IDENTIFIER = "sks"
DEMO_DESCRIPTION = "a red star with a cyan stripe across its middle"
# Five training views: background, position and size vary so that only the subject is constant.
TRAINING_VIEWS = (("white", "large", "center"), ("gray", "large", "left"), ("black", "large", "right"),
                  ("pink", "large", "bottom"), ("brown", "small", "top"))
TRAINING_SEED = 31_000


def demo_scene(background: str = "white", size: str = "large", position: str = "center") -> Scene:
    return Scene(DEMO_CLASS, DEMO_COLOUR, background, size, position, marking=True)


def instance_prompt(identifier: str = DEMO_IDENTIFIER) -> str:
    return f"a photo of {identifier} {DEMO_CLASS}"


def class_prompt() -> str:
    return f"a photo of a {DEMO_CLASS}"


def subject_caption(scene: Scene, identifier: str = "{identifier}") -> str:
    """What a view shows besides the subject, DreamBooth-captioned: "a photo of sks star on the left, on a gray
    background". Size is said only when it is not the subject's usual (large) one.

    The built-in model is tiny: given a prompt that leaves the background open, a fine-tune averages the five
    training backgrounds into grey mush instead of picking one (measured: ~0 % subject fidelity on "a photo of sks
    star", 95 % on the same run with a background named). Captions that name what varies between the photos leave
    the identifier to carry only what is constant: the subject.
    """
    return caption(scene, identifier, size=scene.size != "large", position=True)


def write_demo_subject(folder: str | Path, resolution: int = 64) -> list[Path]:
    """Render the five training images of the subject into `folder` (00.png ... 04.png), each with its caption
    (00.txt ...; `{identifier}` is replaced by the run's identifier)."""
    return write_subject(folder, DEMO_CLASS, DEMO_COLOUR, marking=True, resolution=resolution)


def write_subject(folder: str | Path, cls: str, colour: str, *, marking: bool, resolution: int = 64,
                  marking_kind: str = "band") -> list[Path]:
    """Any subject the world can draw (a class, a colour, with or without a cyan marking: the demo subject's
    horizontal "band" or a vertical "bar", render.MARKING_KINDS), photographed in the demo subject's five views
    with the same kind of captions: the benchmarks' other subjects. Two subjects told apart by their marking's kind
    (a red star with the band, a blue circle with the bar) let a two-subject run be checked for bleed: the judge's
    `marking_kind` says which marking a generation shows. The captions never name the marking, whatever its kind:
    the identifier carries it, as it carries the rest of the subject."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (background, size, position) in enumerate(TRAINING_VIEWS):
        scene = Scene(cls, colour, background, size, position, marking=marking, marking_kind=marking_kind)
        path = folder / f"{i:02d}.png"
        render(scene, TRAINING_SEED + i, resolution).save(path)
        path.with_suffix(".txt").write_text(subject_caption(scene) + "\n")
        paths.append(path)
    return paths


@dataclass(frozen=True)
class PromptCheck:
    """A prompt and what the judge must see in its generations (Verdict field -> value)."""
    prompt: str
    expect: dict = field(default_factory=dict)


SUBJECT = {"cls": DEMO_CLASS, "colour": DEMO_COLOUR, "marking": True}

# Recontextualisation: what the base model follows (background 100 %, colour 100 %, size) in combinations no training
# photo shows. Positions are left out: the base model itself follows position words at chance level (3 of 20
# generations), so no fine-tune could be judged on them.
NEW_CONTEXTS = (("white", "small", None), ("gray", "small", None), ("black", "small", None), ("pink", "small", None),
                ("white", "large", "blue"), ("black", "large", "yellow"), ("pink", "large", "green"),
                ("gray", "large", "purple"))


def subject_fidelity_prompts(identifier: str = DEMO_IDENTIFIER) -> list[PromptCheck]:
    """The subject on each background (the paper scores subject fidelity over its prompt set, contexts included):
    the generation must be the subject (class, colour, marking)."""
    return [PromptCheck(caption(demo_scene(background=bg), identifier), SUBJECT) for bg in BACKGROUNDS]


def plain_subject_prompts(identifier: str = DEMO_IDENTIFIER) -> list[PromptCheck]:
    """The bare identifier, nothing else said; reported on its own (the tiny model's known weak spot)."""
    return [PromptCheck(instance_prompt(identifier), SUBJECT), PromptCheck(f"a {identifier} {DEMO_CLASS}", SUBJECT)]


def prompt_fidelity_prompts(identifier: str = DEMO_IDENTIFIER) -> list[PromptCheck]:
    """Recontextualised subject prompts: a size or a colour (the paper's "property modification") on a background
    the training photos never paired it with. The generation must honour the context and keep the marking."""
    checks = []
    for background, size, colour in NEW_CONTEXTS:
        noun = f"a small {identifier} {DEMO_CLASS}" if size == "small" else f"a {colour} {identifier} {DEMO_CLASS}"
        expect = {"cls": DEMO_CLASS, "marking": True, "background": background}
        expect.update({"size": "small"} if size == "small" else {"colour": colour})
        checks.append(PromptCheck(f"a photo of {noun} on a {background} background", expect))
    return checks


def drift_prompts() -> list[PromptCheck]:
    """Class prompts without the identifier: a well-regularised model keeps drawing
    plain (unmarked) stars in all colours; `marking: False` is what must hold."""
    return [PromptCheck(class_prompt(), {"cls": DEMO_CLASS, "marking": False}),
            PromptCheck(f"a {DEMO_CLASS}", {"cls": DEMO_CLASS, "marking": False}),
            PromptCheck(f"a photo of a blue {DEMO_CLASS} on a white background",
                        {"cls": DEMO_CLASS, "colour": "blue", "background": "white", "marking": False}),
            PromptCheck("a photo of a red circle", {"cls": "circle", "colour": "red", "marking": False})]


def check_passes(verdict, check: PromptCheck) -> bool:
    return all(getattr(verdict, k) == v for k, v in check.expect.items())


# The second subject of the shipped two-subject concepts file (assets/two-subjects.toml): another class, colour and
# marking than the demo star's, so a two-subject run can be read for bleed.
SECOND_SUBJECT = {"cls": "circle", "colour": "blue", "marking": True, "marking_kind": "bar"}


def write_second_subject(folder: str | Path, resolution: int = 64) -> list[Path]:
    return write_subject(folder, SECOND_SUBJECT["cls"], SECOND_SUBJECT["colour"], marking=True,
                         marking_kind=SECOND_SUBJECT["marking_kind"], resolution=resolution)


if __name__ == "__main__":
    for p in write_demo_subject("assets/demo-subject") + write_second_subject("assets/second-subject"):
        print(p, "|", p.with_suffix(".txt").read_text().strip())
