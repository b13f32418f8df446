"""What validation checks of an MNRE split beyond the sentences frame's own columns: each instance's relation is a
label, its head and tail spans lie inside the sentence and differ. A split counts instances, not sentences."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from components.data.records import example_key
from components.tasks.checks import TaskChecks, all_in
from components.tasks.re.records import NO_RELATION, ReExample

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation


class ReChecks(TaskChecks):
    unit = "instances"
    sentence_columns = ("relation", "head_in_bounds", "tail_in_bounds", "distinct_spans")

    @classmethod
    def sentence_row(cls, example: ReExample) -> dict[str, Any]:
        n = len(example.tokens)
        return dict(
            relation=example.relation,
            head_in_bounds=example.head.fits(n),
            tail_in_bounds=example.tail.fits(n),
            distinct_spans=example.head != example.tail,
        )

    @classmethod
    def sentence_expectations(cls, labels: list[str]) -> list[Expectation]:
        return [
            all_in("relation", list(labels), "relation in label set"),
            all_in("head_in_bounds", [True], "head span inside sentence"),
            all_in("tail_in_bounds", [True], "tail span inside sentence"),
            all_in("distinct_spans", [True], "head span != tail span"),
        ]

    @classmethod
    def stats(cls, examples: Sequence[ReExample]) -> dict[str, Any]:
        relations = Counter(e.relation for e in examples)
        return dict(
            sentences=len({example_key(e.tokens, e.image_id) for e in examples}),
            none_instances=relations.get(NO_RELATION, 0),
            related_instances=len(examples) - relations.get(NO_RELATION, 0),
        )
