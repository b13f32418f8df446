"""What validation checks of an mnre-joint split beyond the sentences: at least one entity pair per sentence, entity
and triple spans inside the sentence, triple ends that are entities, relations in the label set, over two frames:

- ``entities``: one row per entity span of a sentence.
- ``triples``: one row per relation triple of a sentence.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from components.tasks.checks import Policy, TaskChecks, all_in, meta
from components.tasks.joint.records import JointExample

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation


def entities_frame(examples: Iterable[JointExample]) -> pd.DataFrame:
    rows = [(ex.id, s.start, s.end, s.fits(len(ex.tokens))) for ex in examples for s in ex.entities]
    frame = pd.DataFrame(rows, columns=["id", "start", "end", "in_bounds"])
    frame["in_bounds"] = frame["in_bounds"].astype(bool)
    return frame


def triples_frame(examples: Iterable[JointExample]) -> pd.DataFrame:
    rows = []
    for ex in examples:
        entities = set(ex.entities)
        n = len(ex.tokens)
        for triple in ex.triples:
            rows.append(
                (
                    ex.id,
                    triple.relation,
                    triple.head.fits(n) and triple.tail.fits(n),
                    triple.head in entities and triple.tail in entities,
                )
            )
    frame = pd.DataFrame(rows, columns=["id", "relation", "in_bounds", "ends_are_entities"])
    for column in ("in_bounds", "ends_are_entities"):
        frame[column] = frame[column].astype(bool)
    frame["relation"] = frame["relation"].astype(object)
    return frame


class JointChecks(TaskChecks):
    sentence_columns = ("n_entities", "n_triples")
    frame_kinds = ("entities", "triples")

    @classmethod
    def sentence_row(cls, example: JointExample) -> dict[str, Any]:
        return {"n_entities": len(example.entities), "n_triples": len(example.triples)}

    @classmethod
    def sentence_expectations(cls, labels: list[str]) -> list[Expectation]:
        import great_expectations.expectations as gxe

        check = "at least one entity pair"
        return [gxe.ExpectColumnValuesToBeBetween(column="n_entities", min_value=2, meta=meta(check))]

    @classmethod
    def record_frames(
        cls, labels: list[str], examples: Sequence[JointExample], policy: Policy
    ) -> list[tuple[str, pd.DataFrame, list[Expectation]]]:
        return [
            ("entities", entities_frame(examples), [all_in("in_bounds", [True], "entity span inside sentence")]),
            (
                "triples",
                triples_frame(examples),
                [
                    all_in("relation", list(labels), "relation in label set"),
                    all_in("in_bounds", [True], "triple spans inside sentence"),
                    all_in("ends_are_entities", [True], "triple head and tail are entities"),
                ],
            ),
        ]

    @classmethod
    def stats(cls, examples: Sequence[JointExample]) -> dict[str, Any]:
        return dict(
            entities=sum(len(e.entities) for e in examples),
            triples=sum(len(e.triples) for e in examples),
            sentences_without_triples=sum(1 for e in examples if not e.triples),
        )
