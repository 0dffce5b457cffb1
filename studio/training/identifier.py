"""Checks on the subject's identifier ("sks") and the instance prompt.

DreamBooth binds the subject to a rare token: a common word ("dog", "red")
carries meaning the model must unlearn, and a word the tokenizer splits into
pieces spreads the subject over several tokens that also appear elsewhere.
Suggestions come from the tokenizer's own vocabulary: short whole-word tokens
with few vowels, taken from the end of the merge list, where BPE keeps its
rarest merges.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# Words people type that are too meaningful to be identifiers.
COMMON_WORDS = frozenset(
    """a an the and or of on in at to with for from by photo picture image painting drawing style
    man woman person people boy girl child baby face dog cat bird car house tree toy red blue green
    yellow black white orange purple pink brown grey gray big small large little new old good best
    my your his her their our this that one two cute beautiful""".split()
)
_VOWELS = set("aeiouy")


@dataclass(frozen=True)
class IdentifierReport:
    identifier: str
    tokens: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    suggestions: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.errors


def word_pieces(tokenizer, word: str) -> list[str]:
    """The BPE pieces `word` becomes, without the start/end tokens."""
    ids = tokenizer(word, add_special_tokens=False).input_ids
    return tokenizer.convert_ids_to_tokens(ids)


def suggest_identifiers(tokenizer, count: int = 5, exclude: set[str] | None = None) -> list[str]:
    """Rare single-token words from the vocabulary: 3-5 letters, at most one vowel, not common."""
    exclude = exclude or set()
    vocab = tokenizer.get_vocab()
    picks = []
    for token, _ in sorted(vocab.items(), key=lambda kv: -kv[1]):
        if not token.endswith("</w>"):
            continue
        word = token[: -len("</w>")]
        if not (word.isascii() and word.isalpha() and 3 <= len(word) <= 5):
            continue
        if sum(c in _VOWELS for c in word) > 1 or word in COMMON_WORDS or word in exclude:
            continue
        if len(word_pieces(tokenizer, word)) == 1:
            picks.append(word)
        if len(picks) == count:
            break
    return picks


def check_identifier(tokenizer, identifier: str, class_noun: str, instance_prompt: str) -> IdentifierReport:
    """Errors stop a run (the prompt can't teach the subject); warnings only advise."""
    identifier = identifier.strip()
    errors, warnings = [], []
    words = instance_prompt.lower().replace(",", " ").split()
    if not identifier:
        errors.append("the identifier is empty; pick a rare word such as the suggestions")
    elif identifier.lower() not in words:
        errors.append(f"the instance prompt {instance_prompt!r} does not contain the identifier {identifier!r}")
    if class_noun and class_noun.lower() not in words:
        errors.append(f"the instance prompt {instance_prompt!r} does not contain the class noun {class_noun!r}")
    if identifier.lower() == class_noun.lower() and identifier:
        errors.append("the identifier must differ from the class noun")
    pieces = word_pieces(tokenizer, identifier) if identifier else []
    if identifier.lower() in COMMON_WORDS:
        warnings.append(f"{identifier!r} is a common word; the model already has a meaning for it, which training must fight")
    if len(pieces) > 1:
        warnings.append(
            f"{identifier!r} splits into {len(pieces)} tokens ({' + '.join(p.replace('</w>', '') for p in pieces)}) "
            "for this model; a single rare token binds the subject more cleanly"
        )
    suggestions = tuple(suggest_identifiers(tokenizer, exclude={identifier.lower()})) if (warnings or errors) else ()
    return IdentifierReport(identifier, tuple(pieces), tuple(warnings), tuple(errors), suggestions)
