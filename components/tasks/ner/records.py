"""The MNER record: one tweet of Twitter-2015/2017."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NerExample:
    """One tweet: tokens with BIO tags and the id of its image."""

    id: str  # "<split>-<index>" so that ids are unique within a dataset
    image_id: str  # as written after IMGID:, without ".jpg"
    tokens: list[str]
    tags: list[str]
