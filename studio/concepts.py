"""Several subjects in one run ("my two dogs"): a list of concepts, each with its own photos, identifier, class noun
and class prior.

A run's first concept is the run's own subject (its identifier, class noun and photos, as in a one-subject run);
the others ride along. On the CLI they come from a TOML file of `[[concept]]` tables:

    [[concept]]
    images = "photos/rex"          # relative to the file's folder
    identifier = "sks"
    class_noun = "dog"

    [[concept]]
    images = "photos/tom"
    identifier = "zwx"
    class_noun = "cat"
    class_prompt = "a photo of a cat"   # optional: default, the run's class prompt for this class noun
    with_prior_preservation = false     # optional: default, the run's setting

Every problem is a ConceptError naming the concept and the key, raised before anything is written.
"""
from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from studio.config import ConfigError, TrainConfig

# what a [[concept]] table may hold; images (a folder) or dataset_id (a photo set of the app) says where its photos are
REQUIRED_KEYS = ("identifier", "class_noun")
OPTIONAL_KEYS = ("class_prompt", "instance_prompt", "with_prior_preservation")
MAX_CONCEPTS = 8


class ConceptError(ConfigError):
    """A concept is malformed or clashes with another; the message names the concept and the key."""


@dataclass(frozen=True)
class Concept:
    """One subject of a run. `images` is a folder (CLI) and `dataset_id` a photo set (app): exactly one is set."""

    identifier: str
    class_noun: str
    images: str = ""
    dataset_id: str = ""
    class_prompt: str = ""  # "" = the run's class prompt template
    instance_prompt: str = ""  # "" = the run's instance prompt template
    with_prior_preservation: bool | None = None  # None = the run's setting

    @property
    def label(self) -> str:
        return f"{self.identifier} {self.class_noun}"

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in ("", None)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Concept":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def overrides(self) -> dict[str, Any]:
        """The settings this concept gives: its identifier and class noun, and the prompts and prior setting it sets."""
        own = {"identifier": self.identifier, "class_noun": self.class_noun}
        return {**own, **{k: v for k, v in self.to_dict().items() if k in OPTIONAL_KEYS}}

    def settings(self, config: TrainConfig) -> TrainConfig:
        """The run's config as this concept sees it: its identifier, class noun, prompts and prior setting."""
        return replace(config, **self.overrides())

    @classmethod
    def of_config(cls, config: TrainConfig, **where: str) -> "Concept":
        return cls(config.identifier, config.class_noun, **where)


def _name(index: int, table: dict[str, Any] | None = None) -> str:
    identifier = (table or {}).get("identifier")
    return f"concept {index + 1}" + (f" ({identifier})" if isinstance(identifier, str) and identifier else "")


def parse_concepts(tables: Any, *, base: Path | None = None, origin: str = "concepts") -> list[Concept]:
    """`[[concept]]` tables -> concepts, each checked key by key; relative `images` are relative to `base`."""
    if not isinstance(tables, list) or not tables:
        raise ConceptError(f"{origin}: no [[concept]] tables; give one per subject, each with images, identifier "
                           "and class_noun")
    if len(tables) > MAX_CONCEPTS:
        raise ConceptError(f"{origin}: {len(tables)} concepts; at most {MAX_CONCEPTS} train in one run")
    concepts = []
    allowed = ("images", "dataset_id", *REQUIRED_KEYS, *OPTIONAL_KEYS)
    for index, table in enumerate(tables):
        where = f"{origin}: {_name(index, table if isinstance(table, dict) else None)}"
        if not isinstance(table, dict):
            raise ConceptError(f"{where}: must be a table of keys ({', '.join(allowed)})")
        for key in table:
            if key not in allowed:
                close = [k for k in allowed if k[:4] == key[:4]]
                raise ConceptError(f"{where}: unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                                   + f"; allowed: {', '.join(allowed)}")
        for key in REQUIRED_KEYS:
            if not isinstance(table.get(key), str) or not table[key].strip():
                raise ConceptError(f"{where}: {key} is missing or empty; e.g. {key} = "
                                   + ('"sks"' if key == "identifier" else '"dog"'))
        for key in ("images", "dataset_id", "class_prompt", "instance_prompt"):
            if key in table and not isinstance(table[key], str):
                raise ConceptError(f"{where}: {key} = {table[key]!r} must be text")
        if "with_prior_preservation" in table and not isinstance(table["with_prior_preservation"], bool):
            raise ConceptError(f"{where}: with_prior_preservation = {table['with_prior_preservation']!r} must be "
                               "true or false")
        if bool(table.get("images")) == bool(table.get("dataset_id")):
            raise ConceptError(f"{where}: images is missing; give the folder of this subject's photos "
                               '(images = "photos/rex")')
        values = {k: v.strip() if isinstance(v, str) else v for k, v in table.items()}
        if values.get("images"):
            folder = Path(values["images"]).expanduser()
            values["images"] = str((base / folder if base is not None and not folder.is_absolute() else folder).resolve())
        concepts.append(Concept(**values))
    return concepts


def load_concepts(path: Path | str) -> list[Concept]:
    """A concepts TOML file: `[[concept]]` tables and nothing else."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConceptError(f"{path}: no such concepts file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConceptError(f"{path}: not valid TOML ({exc}); fix the syntax") from exc
    extra = sorted(set(data) - {"concept"})
    if extra:
        raise ConceptError(f"{path}: unknown key or section {extra}; a concepts file holds only [[concept]] tables")
    concepts = parse_concepts(data.get("concept"), base=path.parent, origin=str(path))
    for index, concept in enumerate(concepts):
        folder = Path(concept.images)
        if concept.images and not folder.is_dir():
            raise ConceptError(f"{path}: {_name(index, concept.to_dict())}: images = {folder} is not a folder; give "
                               "the folder that holds this subject's photos")
    return concepts


def check_concepts(concepts: Sequence[Concept], config: TrainConfig) -> None:
    """Concepts that can train together under `config`: distinct identifiers, no identifier that is another's class
    noun (its class prior would teach the subject), and each concept's own settings valid."""
    from studio.config import check_consistency

    if len(concepts) < 2:
        return
    if config.learns_token:
        raise ConceptError(f"method = {config.method!r} learns one new token per run; several concepts train with "
                           "method = 'lora' or 'full' (or train one textual inversion per subject)")
    seen: dict[str, int] = {}
    for index, concept in enumerate(concepts):
        where = _name(index, concept.to_dict())
        key = concept.identifier.lower()
        if key in seen:
            raise ConceptError(f"{where}: identifier {concept.identifier!r} is also concept {seen[key] + 1}'s; give "
                               "each subject its own rare word")
        seen[key] = index
    nouns = {c.class_noun.lower(): i for i, c in enumerate(concepts)}
    for index, concept in enumerate(concepts):
        other = nouns.get(concept.identifier.lower())
        if other is not None and other != index:
            raise ConceptError(f"{_name(index, concept.to_dict())}: identifier {concept.identifier!r} is concept "
                               f"{other + 1}'s class_noun; the class prior would teach that subject as the whole "
                               "class. Pick another identifier")
        try:
            check_consistency(concept.settings(config))
        except ConfigError as exc:
            raise ConceptError(f"{_name(index, concept.to_dict())}: {exc}") from exc
