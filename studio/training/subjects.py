"""The subjects a run teaches, and how each batch shares its rows between them.

A one-subject run has one `Subject`: the run's config and photos. A several-subject run has one per concept, each
seeing the run's config with its own identifier, class noun, prompts and prior setting (studio.concepts). Batches
mix the subjects evenly: instance rows are dealt round robin across the run, so with two subjects and batch 1 the
steps alternate, and with batch 2 every step holds both. Each subject with prior preservation adds, for each of its
instance rows, one class image of its own class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from studio.config import TrainConfig
from studio.data.dataset import PreparedImage


@dataclass(frozen=True)
class Subject:
    config: TrainConfig  # the run's config as this subject sees it
    images: Sequence[PreparedImage]

    @property
    def identifier(self) -> str:
        return self.config.identifier

    @property
    def class_prompt(self) -> str | None:
        """The prompt of its class images, or None without prior preservation. Textual inversion has none either: the
        class prompt does not say the new token, and nothing else trains, so its class images could teach nothing."""
        keeps_prior = self.config.with_prior_preservation and self.config.method != "textual_inversion"
        return self.config.resolved_class_prompt if keeps_prior else None


def row_owners(micro_batch: int, batch: int, subjects: int) -> list[int]:
    """Which subject each instance row of the `micro_batch`-th global batch shows: dealt round robin from the run's
    first row, so every subject gets the same share of the rows (give or take one) at every point of the run."""
    return [(micro_batch * batch + row) % subjects for row in range(batch)]


@dataclass(frozen=True)
class Layout:
    """A global batch laid out as [instance rows..., class rows...]: who owns each instance row, and which instance
    row each class row belongs to (its subject's class)."""

    owners: list[int]
    pairs: list[int]  # class row k belongs to instance row pairs[k]

    def mine(self, instance_rows: Sequence[int]) -> list[int]:
        """The rows (of the whole layout) that go with these instance rows: them, then their class rows."""
        keep = set(instance_rows)
        batch = len(self.owners)
        return [*instance_rows, *(batch + k for k, row in enumerate(self.pairs) if row in keep)]


def layout(micro_batch: int, batch: int, subjects: Sequence[Subject]) -> Layout:
    owners = row_owners(micro_batch, batch, len(subjects))
    # class rows grouped by subject, in row order within each: the order the class images are drawn in
    pairs = [row for index, subject in enumerate(subjects) if subject.class_prompt is not None
             for row, owner in enumerate(owners) if owner == index]
    return Layout(owners, pairs)


def preview_prompts(subjects: Sequence[Subject]) -> tuple[str, ...]:
    """Each subject's prompt and its class's, so the previews show every subject and every class's drift."""
    prompts: list[str] = []
    for subject in subjects:
        for prompt in (subject.config.resolved_instance_prompt, subject.config.resolved_class_prompt):
            if prompt not in prompts:
                prompts.append(prompt)
    return tuple(prompts)
