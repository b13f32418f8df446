"""The Great Expectations suites: which expectations each frame of a split must meet.

Every expectation carries ``meta``: ``check`` (what the table calls it) and ``blocking`` (whether its failure makes the
validation fail). Informational expectations (context coverage where no published set covers the images, sentences
shared with train under another image) are reported but never block.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

from components.data.bio import bio_tags
from components.data.datasets import DatasetSpec
from components.data.records import NO_RELATION
from components.validation import frames as F

# The checks below are built only when a suite is built, so GX is imported by the command that validates, not by
# whoever imports this module.


@dataclass(frozen=True)
class Policy:
    """Thresholds of one validation run."""

    max_bio_error_rate: float  # mentions starting with I- / all mentions, per split
    min_context_coverage: float | None  # None: no contexts to check (generator "none")
    coverage_blocking: bool
    max_empty_context_rate: float
    check_published_sizes: bool


def _meta(check: str, blocking: bool = True, **extra) -> dict:
    return {"check": check, "blocking": blocking, **extra}


def _all_in(column: str, values: list, check: str, blocking: bool = True, **kwargs):
    """Every value of ``column`` is one of ``values`` (``mostly`` relaxes it to a share)."""
    import great_expectations.expectations as gxe

    return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=values, meta=_meta(check, blocking), **kwargs)


def sentence_expectations(spec: DatasetSpec, split: str, policy: Policy) -> list:
    import great_expectations.expectations as gxe

    task = TASK_SUITES[spec.task]
    unit = task.unit
    out = []
    if policy.check_published_sizes:
        expected = spec.sizes[split]
        check = f"split size = published {expected} {unit}"
        out.append(gxe.ExpectTableRowCountToEqual(value=expected, meta=_meta(check)))
    else:
        out.append(gxe.ExpectTableRowCountToBeBetween(min_value=1, meta=_meta(f"split size >= 1 {unit}")))
    out += [
        gxe.ExpectColumnValuesToBeBetween(column="n_tokens", min_value=1, meta=_meta("no empty sentence")),
        _all_in("empty_tokens", [0], "no empty token"),
    ]
    out += task.sentence_expectations(spec)
    if policy.min_context_coverage is not None:
        out += [
            gxe.ExpectColumnMeanToBeBetween(
                column="has_context",
                min_value=policy.min_context_coverage,
                max_value=1.0,
                meta=_meta(
                    f"context coverage >= {policy.min_context_coverage:.0%}"
                    + ("" if policy.coverage_blocking else " (informational)"),
                    policy.coverage_blocking,
                    format="share",
                ),
            ),
            gxe.ExpectColumnValueLengthsToBeBetween(
                column="context",
                min_value=1,
                mostly=1.0 - policy.max_empty_context_rate,
                meta=_meta(f"empty context texts <= {policy.max_empty_context_rate:.0%}", policy.coverage_blocking),
            ),
        ]
    if split != "train":
        out += [
            _all_in("example_in_train", [False], "no leakage: (text, image) also in train"),
            _all_in("text_in_train", [False], "text also in train (another image)", blocking=False),
        ]
    return out


def token_expectations(spec: DatasetSpec, policy: Policy) -> list:
    return [_all_in("tag", bio_tags(spec.labels), "tag in label set")]


def mention_expectations(spec: DatasetSpec, policy: Policy) -> list:
    check = f"BIO: mentions starting with I- <= {policy.max_bio_error_rate:.0%}"
    return [_all_in("starts_with_i", [False], check, mostly=1.0 - policy.max_bio_error_rate)]


def entity_expectations(spec: DatasetSpec, policy: Policy) -> list:
    return [_all_in("in_bounds", [True], "entity span inside sentence")]


def triple_expectations(spec: DatasetSpec, policy: Policy) -> list:
    return [
        _all_in("relation", list(spec.labels), "relation in label set"),
        _all_in("in_bounds", [True], "triple spans inside sentence"),
        _all_in("ends_are_entities", [True], "triple head and tail are entities"),
    ]


def problem_expectations() -> list:
    import great_expectations.expectations as gxe

    return [gxe.ExpectTableRowCountToEqual(value=0, meta=_meta("reader problems = 0"))]


# What validation checks per task: the unit a split counts, the task's sentence checks, the frames only its records
# have (with their suites) and its statistics. The one place validation knows the tasks.


class TaskSuites:
    unit: ClassVar[str] = "sentences"
    sentence_columns: ClassVar[tuple[str, ...]] = ()  # the task's own columns of the sentences frame

    @classmethod
    def sentence_row(cls, example) -> dict[str, Any]:
        """The values of `sentence_columns` for one example."""
        return {}

    @classmethod
    def sentence_expectations(cls, spec: DatasetSpec) -> list:
        return []

    @classmethod
    def record_frames(cls, spec: DatasetSpec, examples: list, policy: Policy) -> list[tuple[str, Any, list]]:
        """(frame kind, frame, expectations) of the frames beyond the sentences."""
        return []

    @classmethod
    def stats(cls, examples: list) -> dict[str, Any]:
        return {}


class NerSuites(TaskSuites):
    sentence_columns = ("n_tags",)

    @classmethod
    def sentence_row(cls, example):
        return {"n_tags": len(example.tags)}

    @classmethod
    def sentence_expectations(cls, spec):
        import great_expectations.expectations as gxe

        check = "as many tags as tokens"
        return [gxe.ExpectColumnPairValuesToBeEqual(column_A="n_tokens", column_B="n_tags", meta=_meta(check))]

    @classmethod
    def record_frames(cls, spec, examples, policy):
        return [
            ("tokens", F.tokens_frame(examples), token_expectations(spec, policy)),
            ("mentions", F.mentions_frame(examples), mention_expectations(spec, policy)),
        ]

    @classmethod
    def stats(cls, examples):
        mentions = [m for e in examples for m in F.bio_mentions(e.tags)]
        starts_with_i = sum(1 for _, i in mentions if i)
        return dict(
            mentions=len(mentions),
            mentions_by_type=dict(sorted(Counter(t for t, _ in mentions).items())),
            i_starts=starts_with_i,
            i_start_rate=starts_with_i / len(mentions) if mentions else 0.0,
        )


class ReSuites(TaskSuites):
    unit = "instances"
    sentence_columns = ("relation", "head_in_bounds", "tail_in_bounds", "distinct_spans")

    @classmethod
    def sentence_row(cls, example):
        n = len(example.tokens)
        return dict(
            relation=example.relation,
            head_in_bounds=example.head.fits(n),
            tail_in_bounds=example.tail.fits(n),
            distinct_spans=example.head != example.tail,
        )

    @classmethod
    def sentence_expectations(cls, spec):
        return [
            _all_in("relation", list(spec.labels), "relation in label set"),
            _all_in("head_in_bounds", [True], "head span inside sentence"),
            _all_in("tail_in_bounds", [True], "tail span inside sentence"),
            _all_in("distinct_spans", [True], "head span != tail span"),
        ]

    @classmethod
    def stats(cls, examples):
        relations = Counter(e.relation for e in examples)
        return dict(
            sentences=len({F.example_key(e.tokens, e.image_id) for e in examples}),
            none_instances=relations.get(NO_RELATION, 0),
            related_instances=len(examples) - relations.get(NO_RELATION, 0),
        )


class JointSuites(TaskSuites):
    sentence_columns = ("n_entities", "n_triples")

    @classmethod
    def sentence_row(cls, example):
        return {"n_entities": len(example.entities), "n_triples": len(example.triples)}

    @classmethod
    def sentence_expectations(cls, spec):
        import great_expectations.expectations as gxe

        check = "at least one entity pair"
        return [gxe.ExpectColumnValuesToBeBetween(column="n_entities", min_value=2, meta=_meta(check))]

    @classmethod
    def record_frames(cls, spec, examples, policy):
        return [
            ("entities", F.entities_frame(examples), entity_expectations(spec, policy)),
            ("triples", F.triples_frame(examples), triple_expectations(spec, policy)),
        ]

    @classmethod
    def stats(cls, examples):
        return dict(
            entities=sum(len(e.entities) for e in examples),
            triples=sum(len(e.triples) for e in examples),
            sentences_without_triples=sum(1 for e in examples if not e.triples),
        )


TASK_SUITES: dict[str, type[TaskSuites]] = {"ner": NerSuites, "re": ReSuites, "joint": JointSuites}
