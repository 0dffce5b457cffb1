"""The evaluation prompts: the subject as trained, the subject in new contexts, and the bare class.

Derived from the identifier and class noun unless the user gives `eval_prompts`; seeds are fixed (`eval_seeds`),
so a checkpoint's score is reproducible. Few prompts on purpose: scoring runs at every checkpoint and must stay a
small share of the run (see README, "Scorecard").
"""
from __future__ import annotations

from dataclasses import dataclass

from studio.config import TrainConfig

# The built-in world only knows plain backgrounds, colours and sizes (studio/world/render.py): its contexts are those.
WORLD_SUBJECT_BACKGROUNDS = ("white", "black", "pink")
WORLD_RECONTEXTS = ("a photo of a small {identifier} {class_noun} on a gray background",
                    "a photo of a blue {identifier} {class_noun} on a white background")
# A real model knows the world: the paper's kinds of recontextualisation (a place, a property change).
REAL_SUBJECTS = ("a photo of {identifier} {class_noun}", "a {identifier} {class_noun}")
REAL_RECONTEXTS = ("a {identifier} {class_noun} on the beach", "a {identifier} {class_noun} in the snow",
                   "a red {identifier} {class_noun}")


@dataclass(frozen=True)
class EvalPrompts:
    subject: tuple[str, ...]  # the subject as trained: subject fidelity
    recontext: tuple[str, ...]  # the subject in a new context or with a changed property: prompt fidelity
    classes: tuple[str, ...]  # the class without the identifier: drift and diversity
    seeds: tuple[int, ...]

    def pairs(self) -> list[tuple[str, int]]:
        """Every (prompt, seed) to draw, in a fixed order."""
        return [(p, s) for p in (*self.subject, *self.recontext, *self.classes) for s in self.seeds]


def eval_prompts(config: TrainConfig, *, world: bool) -> EvalPrompts:
    """The run's evaluation prompts. With `eval_prompts` set, each prompt is sorted by what it says: the instance
    prompt is a subject prompt, other prompts naming the identifier are recontextualisations, the rest are class
    prompts; the instance prompt and the class prompt are added when missing, so every number can be measured."""
    seeds = tuple(config.eval_seeds) or (0,)
    if config.eval_prompts:
        given = [config.prompt(p) for p in config.eval_prompts]
        named = lambda p: config.token in p.split()
        subject = [p for p in given if p == config.resolved_instance_prompt] or [config.resolved_instance_prompt]
        recontext = [p for p in given if named(p) and p not in subject]
        classes = [p for p in given if not named(p)] or [config.resolved_class_prompt]
        return EvalPrompts(tuple(subject), tuple(recontext), tuple(classes), seeds)
    if world:
        subject = [config.prompt(f"a photo of {{identifier}} {{class_noun}} on a {bg} background")
                   for bg in WORLD_SUBJECT_BACKGROUNDS]
        recontext = [config.prompt(p) for p in WORLD_RECONTEXTS]
        classes = [config.resolved_class_prompt, config.prompt("a {class_noun}")]
    else:
        subject = [config.prompt(p) for p in REAL_SUBJECTS]
        recontext = [config.prompt(p) for p in REAL_RECONTEXTS]
        classes = [config.resolved_class_prompt]
    return EvalPrompts(tuple(dict.fromkeys(subject)), tuple(recontext), tuple(dict.fromkeys(classes)), seeds)
