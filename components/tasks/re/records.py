"""The MRE record: one MNRE instance."""

from __future__ import annotations

from dataclasses import dataclass

from components.data.records import Span

NO_RELATION = "None"  # MNRE's label for a pair with no relation between them


@dataclass(frozen=True)
class ReExample:
    """A sentence, a (head, tail) entity pair and the relation between them."""

    id: str
    image_id: str  # file name without ".jpg"
    tokens: list[str]
    head: Span
    tail: Span
    relation: str  # one of 23 labels, NO_RELATION included
