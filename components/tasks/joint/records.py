"""The joint extraction record: a sentence with all its entities and relation triples."""

from __future__ import annotations

from dataclasses import dataclass

from components.data.records import Span


@dataclass(frozen=True)
class Triple:
    head: Span
    relation: str
    tail: Span


@dataclass(frozen=True)
class JointExample:
    """A sentence of ``mnre-joint``: every entity span MNRE marks in it and every non-None relation triple."""

    id: str
    image_id: str
    tokens: list[str]
    entities: list[Span]
    triples: list[Triple]
