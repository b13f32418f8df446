"""Joint extraction, torch-free: untyped entity BIO tags and the relation of every ordered pair of gold entities,
triple-level scores, triples as JSON; the pair classifier's width is the head's one setting.

Scores: exact ``(head span, relation, tail span)`` triples, micro P/R/F1, per relation beside them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from pydantic import Field

from components.data.bio import bio_tags
from components.data.metrics import Scores, paired_labels, set_match_scores
from components.data.records import Span
from components.tasks.base import (
    EncodedWords,
    HeadSettings,
    LabelArrays,
    LabelIds,
    Task,
    check_span,
    json_spans,
    label_id,
)
from components.tasks.joint.checks import JointChecks
from components.tasks.joint.records import JointExample, Triple
from components.tasks.re.records import NO_RELATION

ENTITY_TYPE = "ENT"  # the one entity type of the untyped BIO tagging


Prediction = list[tuple[Triple, float]]  # a sentence's (triple, score) pairs, the head's `decode`


class JointSettings(HeadSettings):
    pair_hidden: int = Field(256, ge=1)  # hidden size of the pair classifier


def triple_scores(gold: Sequence[Iterable[Triple]], pred: Sequence[Iterable[Triple]]) -> Scores:
    """Micro P/R/F1 over exact (head span, relation, tail span) triples, one collection per sentence; per relation."""
    return set_match_scores(gold, pred, lambda triple: triple.relation, "triple_scores")


def ordered_pairs(spans_per_sample: list[list[Span]]) -> list[tuple[int, Span, Span]]:
    """(sample, head, tail) for every ordered pair of distinct spans of each sample."""
    return [(b, h, t) for b, spans in enumerate(spans_per_sample) for h in spans for t in spans if h != t]


def pair_arrays(pairs: list[tuple[int, Span, Span]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sample (P,), head (P, 2) and tail (P, 2) [start, end) arrays of the pairs, int64."""
    sample = np.array([b for b, _, _ in pairs], dtype=np.int64)
    head = np.array([(h.start, h.end) for _, h, _ in pairs], dtype=np.int64).reshape(-1, 2)
    tail = np.array([(t.start, t.end) for _, _, t in pairs], dtype=np.int64).reshape(-1, 2)
    return sample, head, tail


class JointTask(Task):
    name = "joint"
    description = "joint multimodal entity and relation extraction (entity spans and relation triples)"
    example_type = JointExample
    head_name = "JointHead"
    checks = JointChecks
    settings = JointSettings
    target_column = "triples"

    @classmethod
    def check_labels(cls, labels: list[str]) -> list[str]:
        labels = super().check_labels(labels)
        if NO_RELATION in labels:
            raise ValueError(f"joint: labels are the relations without {NO_RELATION!r} (the pair classifier adds it)")
        return labels

    @classmethod
    def label_ids(cls, labels: list[str]) -> LabelIds:
        return {
            "tags": {t: i for i, t in enumerate(bio_tags([ENTITY_TYPE]))},
            "relations": {r: i for i, r in enumerate([NO_RELATION, *labels])},
        }

    @classmethod
    def encode_labels(cls, examples: Sequence[JointExample], ids: LabelIds, words: EncodedWords) -> LabelArrays:
        """Entity BIO tags (B, W) (a span overlapping an earlier one is not tagged: BIO cannot hold both) and every
        ordered pair of gold entities with its relation (the first triple's where a pair has several), 0 where none:
        pair_sample (P,), pair_head (P, 2), pair_tail (P, 2), pair_label (P,)."""
        tags = np.zeros((len(examples), words.width), dtype=np.int64)
        begin, inside = ids["tags"][f"B-{ENTITY_TYPE}"], ids["tags"][f"I-{ENTITY_TYPE}"]
        visible, relations = [], []  # per sample: spans with word states, (head, tail) -> relation id
        for b, ex in enumerate(examples):
            relation_of: dict[tuple[Span, Span], int] = {}
            for triple in ex.triples:
                relation_of.setdefault(
                    (triple.head, triple.tail), label_id(ids["relations"], ex, triple.relation, "relation")
                )
            spans = sorted(
                {*ex.entities, *(s for t in ex.triples for s in (t.head, t.tail))}, key=lambda s: (s.start, s.end)
            )
            taken = np.zeros(len(ex.tokens), dtype=bool)
            row = np.zeros(len(ex.tokens), dtype=np.int64)
            for span in spans:
                check_span(ex, span, "entity")
                if not taken[span.start : span.end].any():
                    taken[span.start : span.end] = True
                    row[span.start] = begin
                    row[span.start + 1 : span.end] = inside
            width = min(len(row), words.width)  # words cut at the window have no column
            tags[b, :width] = row[:width]
            visible.append([s for s in spans if s.end <= words.kept[b]])  # spans past the window have no word states
            relations.append(relation_of)
        pairs = ordered_pairs(visible)
        sample, head, tail = pair_arrays(pairs)
        label = np.array([relations[b].get((h, t), 0) for b, h, t in pairs], dtype=np.int64)
        return {"tags": tags, "pair_sample": sample, "pair_head": head, "pair_tail": tail, "pair_label": label}

    @classmethod
    def label_columns(cls, example: JointExample) -> dict[str, str]:
        triples = [[t.head.start, t.head.end, t.relation, t.tail.start, t.tail.end] for t in example.triples]
        return {"entities": json_spans(example.entities), "triples": json.dumps(triples)}

    @classmethod
    def serving_record(cls, row_id: str, tokens: list[str], spans: dict[str, Span], labels: list[str]) -> JointExample:
        return JointExample(id=row_id, image_id=row_id, tokens=tokens, entities=[], triples=[])

    @classmethod
    def score(cls, examples: Sequence[JointExample], predictions: Sequence[Prediction]) -> Scores:
        gold = [set(e.triples) for e in examples]
        pred = [{triple for triple, _ in sentence} for sentence in predictions]
        return triple_scores(gold, pred)

    @classmethod
    def confusion(
        cls, examples: Sequence[JointExample], predictions: Sequence[Prediction]
    ) -> tuple[list[str], list[str]]:
        at_pair = [[((t.head, t.tail), t.relation) for t in set(e.triples)] for e in examples]
        predicted_at_pair = [[((t.head, t.tail), t.relation) for t in {t for t, _ in s}] for s in predictions]
        return paired_labels(at_pair, predicted_at_pair, NO_RELATION)

    @classmethod
    def to_json(cls, example: JointExample, prediction: Prediction) -> dict[str, Any]:
        triples = [
            {
                "head": [t.head.start, t.head.end],
                "relation": t.relation,
                "tail": [t.tail.start, t.tail.end],
                "score": float(score),
            }
            for t, score in prediction
        ]
        return {"triples": triples}
