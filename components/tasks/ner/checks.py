"""What validation checks of an MNER split beyond the sentences: one tag per token, tags in the label set, and the BIO
error rate (mentions that start with ``I-``), over two frames of its own:

- ``tokens``: one row per token with its tag.
- ``mentions``: one row per entity mention; ``starts_with_i`` marks a mention whose first tag is ``I-T`` without a
  ``B-T``/``I-T`` before it. BIO error rate = mentions starting with I- / all mentions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from components.data.bio import bio_tags, bio_to_spans
from components.tasks.checks import Policy, TaskChecks, all_in, meta
from components.tasks.ner.records import NerExample

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation


def bio_mentions(tags: Sequence[str]) -> list[tuple[str, bool]]:
    """(entity type, starts_with_i) for every mention, chunked as the metric chunks them (conlleval): a mention starts
    at a B-T tag, or at an I-T tag that continues no T mention (starts_with_i)."""
    return [(entity_type, tags[span.start].startswith("I-")) for entity_type, span in bio_to_spans(tags)]


def tokens_frame(examples: Iterable[NerExample]) -> pd.DataFrame:
    rows = [(ex.id, tag) for ex in examples for tag in ex.tags]
    return pd.DataFrame(rows, columns=["id", "tag"], dtype=object)


def mentions_frame(examples: Iterable[NerExample]) -> pd.DataFrame:
    rows = [(ex.id, t, starts_with_i) for ex in examples for t, starts_with_i in bio_mentions(ex.tags)]
    frame = pd.DataFrame(rows, columns=["id", "type", "starts_with_i"])
    frame["starts_with_i"] = frame["starts_with_i"].astype(bool)
    return frame


class NerChecks(TaskChecks):
    sentence_columns = ("n_tags",)
    frame_kinds = ("tokens", "mentions")

    @classmethod
    def sentence_row(cls, example: NerExample) -> dict[str, Any]:
        return {"n_tags": len(example.tags)}

    @classmethod
    def sentence_expectations(cls, labels: list[str]) -> list[Expectation]:
        import great_expectations.expectations as gxe

        check = "as many tags as tokens"
        return [gxe.ExpectColumnPairValuesToBeEqual(column_A="n_tokens", column_B="n_tags", meta=meta(check))]

    @classmethod
    def record_frames(
        cls, labels: list[str], examples: Sequence[NerExample], policy: Policy
    ) -> list[tuple[str, pd.DataFrame, list[Expectation]]]:
        bio_check = f"BIO: mentions starting with I- <= {policy.max_bio_error_rate:.0%}"
        return [
            ("tokens", tokens_frame(examples), [all_in("tag", bio_tags(labels), "tag in label set")]),
            (
                "mentions",
                mentions_frame(examples),
                [all_in("starts_with_i", [False], bio_check, mostly=1.0 - policy.max_bio_error_rate)],
            ),
        ]

    @classmethod
    def stats(cls, examples: Sequence[NerExample]) -> dict[str, Any]:
        mentions = [m for e in examples for m in bio_mentions(e.tags)]
        starts_with_i = sum(1 for _, i in mentions if i)
        return dict(
            mentions=len(mentions),
            mentions_by_type=dict(sorted(Counter(t for t, _ in mentions).items())),
            i_starts=starts_with_i,
            i_start_rate=starts_with_i / len(mentions) if mentions else 0.0,
        )
