"""The built-in world's scorer: the judge (studio/world/judge.py) reads each generation exactly.

Same definitions as `benchmarks/dreambooth.py`, generalised from the demo star to any subject the world can hold:
the subject is what the judge reads in the user's own photos (class, colour, and whether it carries the cyan
marking no base-world picture has).
    subject fidelity  subject prompts draw the subject: its class, its colour, its marking
    prompt fidelity   recontextualised prompts honour what they name (background, size, colour) and keep the subject
    drift (PRES)      class prompts draw the subject's distinguishing look: its marking, or for an unmarked subject
                      its class in its colour
    diversity         mean pairwise difference of class-prompt pictures in colour, background and size
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from typing import Sequence

from PIL import Image

from studio.evaluation.scores import UNMEASURED, EvalImages, Scorer, ScorerUnavailable, Scores
from studio.world.judge import Verdict, judge
from studio.world.render import BACKGROUNDS, CLASSES, COLOURS, SIZES

DIVERSITY_FIELDS = ("colour", "background", "size")


@dataclass(frozen=True)
class Subject:
    cls: str
    colour: str
    marking: bool


def read_subject(photos: Sequence[Image.Image], class_noun: str) -> Subject:
    """The subject as the judge reads it in the user's photos (majority of each field)."""
    if class_noun not in CLASSES:
        raise ScorerUnavailable(f"the built-in world's judge knows only {', '.join(CLASSES)}; a {class_noun!r} "
                                "cannot be scored on this base model")
    verdicts = [judge(p) for p in photos]
    majority = lambda name: Counter(getattr(v, name) for v in verdicts).most_common(1)[0]
    (cls, n_cls), (colour, _), (marking, _) = majority("cls"), majority("colour"), majority("marking")
    if cls != class_noun or n_cls * 2 < len(verdicts) or colour is None:
        raise ScorerUnavailable(f"the judge cannot read a {class_noun} in the photos (it sees {cls or 'no shape'}); "
                                "the scorecard needs photos of the built-in world's shapes")
    return Subject(cls, colour, bool(marking))


def expectation(prompt: str, subject: Subject) -> dict:
    """What a recontextualised prompt asks for, read from its words, plus the subject's class and marking."""
    words = prompt.replace(",", " ").split()
    expect = {"cls": subject.cls, "marking": subject.marking}
    for i, word in enumerate(words):
        if word in BACKGROUNDS and i + 1 < len(words) and words[i + 1] == "background":
            expect["background"] = word
        elif word in COLOURS:
            expect["colour"] = word
        elif word in SIZES:
            expect["size"] = word
    return expect


def _share(hits: list[bool]) -> float:
    return sum(hits) / len(hits) if hits else UNMEASURED


class WorldScorer(Scorer):
    name = "world judge"

    def __init__(self, class_noun: str) -> None:
        self.class_noun = class_noun

    def prepare(self) -> None:
        if self.class_noun not in CLASSES:
            read_subject([], self.class_noun)  # raises the one-line reason

    def score(self, drawn: EvalImages, photos: Sequence[Image.Image]) -> Scores:
        subject = read_subject(photos, self.class_noun)
        read = lambda items: [(d, judge(d.image)) for d in items]
        is_subject = lambda v: v.cls == subject.cls and v.colour == subject.colour and v.marking == subject.marking
        fidelity = _share([is_subject(v) for _, v in read(drawn.subject)])
        follows = lambda d, v: all(getattr(v, k) == want for k, want in expectation(d.prompt, subject).items())
        prompt_fidelity = _share([follows(d, v) for d, v in read(drawn.recontext)])
        classes = [v for _, v in read(drawn.classes)]
        looks_like = ((lambda v: v.marking) if subject.marking
                      else (lambda v: v.cls == subject.cls and v.colour == subject.colour))
        drift = _share([looks_like(v) for v in classes])
        return Scores(fidelity, prompt_fidelity, drift, diversity(classes))


def diversity(verdicts: Sequence[Verdict]) -> float:
    pairs = list(combinations(verdicts, 2))
    if not pairs:
        return UNMEASURED
    differ = lambda a, b: sum(getattr(a, f) != getattr(b, f) for f in DIVERSITY_FIELDS) / len(DIVERSITY_FIELDS)
    return sum(differ(a, b) for a, b in pairs) / len(pairs)


