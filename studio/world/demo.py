"""The demo subject DreamBooth learns, and the prompt sets the benchmarks judge.

The subject is one specific red star with a cyan stripe across its middle. The
base model knows red stars but has never seen the stripe (no base-world render
has it), so only a successful DreamBooth run can draw it: the judge's `marking`
field tells subject from class.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from studio.world.render import BACKGROUNDS, POSITIONS, Scene, caption, render

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


def write_demo_subject(folder: str | Path, resolution: int = 64) -> list[Path]:
    """Render the five training images of the subject into `folder` (00.png ... 04.png)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, view in enumerate(TRAINING_VIEWS):
        path = folder / f"{i:02d}.png"
        render(demo_scene(*view), TRAINING_SEED + i, resolution).save(path)
        paths.append(path)
    return paths


@dataclass(frozen=True)
class PromptCheck:
    """A prompt and what the judge must see in its generations (Verdict field -> value)."""
    prompt: str
    expect: dict = field(default_factory=dict)


def subject_fidelity_prompts(identifier: str = DEMO_IDENTIFIER) -> list[PromptCheck]:
    """Plain subject prompts: the generation must be the subject (class, colour, marking)."""
    subject = {"cls": DEMO_CLASS, "colour": DEMO_COLOUR, "marking": True}
    return [PromptCheck(instance_prompt(identifier), subject),
            PromptCheck(f"a {identifier} {DEMO_CLASS}", subject),
            PromptCheck(f"{identifier} {DEMO_CLASS}", subject)]


def prompt_fidelity_prompts(identifier: str = DEMO_IDENTIFIER) -> list[PromptCheck]:
    """Recontextualised subject prompts: the subject plus the requested context."""
    checks = []
    for bg in BACKGROUNDS:
        scene = demo_scene(background=bg)
        checks.append(PromptCheck(caption(scene, identifier), {"cls": DEMO_CLASS, "marking": True, "background": bg}))
    for pos in POSITIONS[1:]:
        scene = demo_scene(position=pos)
        checks.append(PromptCheck(caption(scene, identifier, background=False, position=True),
                                  {"cls": DEMO_CLASS, "marking": True, "position": pos}))
    scene = demo_scene(size="small")
    checks.append(PromptCheck(caption(scene, identifier, background=False, size=True),
                              {"cls": DEMO_CLASS, "marking": True, "size": "small"}))
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


if __name__ == "__main__":
    for p in write_demo_subject("assets/demo-subject"):
        print(p)
