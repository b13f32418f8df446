"""MNER, torch-free: entity types and their BIO tag ids, tag arrays, entity-level scores, entities as JSON.

Scores: entity chunks ``(type, start, end)`` read from BIO tags with conlleval semantics (what seqeval computes by
default; components/data/bio.py): an ``I-X`` that follows ``O`` or a chunk of another type starts a new chunk
instead of being dropped. Micro P/R/F1 over exact chunk matches, per type beside them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from components.data.bio import OUTSIDE, Entity, bio_tags, bio_to_spans
from components.data.metrics import Scores, paired_labels, set_match_scores
from components.data.records import Span
from components.tasks.base import EncodedWords, LabelArrays, LabelIds, Task, label_id
from components.tasks.ner.checks import NerChecks
from components.tasks.ner.records import NerExample

Prediction = list[tuple[Span, str, float]]  # a sentence's entities: (span, type, score), the head's `decode`


def span_scores(gold: Sequence[Iterable[Entity]], pred: Sequence[Iterable[Entity]]) -> Scores:
    """Entity-level micro P/R/F1 and per-type scores from typed spans, one collection per sentence."""
    return set_match_scores(gold, pred, lambda entity: entity[0], "span_scores")


class NerTask(Task):
    name = "ner"
    description = "multimodal named entity recognition (BIO tags per token)"
    example_type = NerExample
    head_name = "NerHead"
    checks = NerChecks
    target_column = "tags"

    @classmethod
    def check_labels(cls, labels: list[str]) -> list[str]:
        labels = super().check_labels(labels)
        if any(t == OUTSIDE or t[:2] in ("B-", "I-") for t in labels):
            raise ValueError(f"ner: labels are entity types such as PER, LOC (BIO tags derive from them), got {labels}")
        return labels

    @classmethod
    def label_ids(cls, labels: list[str]) -> LabelIds:
        return {"tags": {t: i for i, t in enumerate(bio_tags(labels))}}

    @classmethod
    def encode_labels(cls, examples: Sequence[NerExample], ids: LabelIds, words: EncodedWords) -> LabelArrays:
        """tags (B, W): each word's tag id, 0 (O) past its sentence; words cut at the window have no column."""
        tags = np.zeros((len(examples), words.width), dtype=np.int64)
        for b, ex in enumerate(examples):
            if len(ex.tags) != len(ex.tokens):
                raise ValueError(f"example {ex.id}: an NER example needs one tag per token")
            row = [label_id(ids["tags"], ex, t, "tag", f" at token {i}") for i, t in enumerate(ex.tags)]
            tags[b, : min(len(row), words.width)] = row[: words.width]
        return {"tags": tags}

    @classmethod
    def label_columns(cls, example: NerExample) -> dict[str, str]:
        return {"tags": " ".join(example.tags)}

    @classmethod
    def serving_record(cls, row_id: str, tokens: list[str], spans: dict[str, Span], labels: list[str]) -> NerExample:
        return NerExample(id=row_id, image_id=row_id, tokens=tokens, tags=[OUTSIDE] * len(tokens))

    @classmethod
    def score(cls, examples: Sequence[NerExample], predictions: Sequence[Prediction]) -> Scores:
        gold = [set(bio_to_spans(e.tags)) for e in examples]
        pred = [{(label, span) for span, label, _ in sentence} for sentence in predictions]
        return span_scores(gold, pred)

    @classmethod
    def confusion(
        cls, examples: Sequence[NerExample], predictions: Sequence[Prediction]
    ) -> tuple[list[str], list[str]]:
        at_span = [[(span, label) for label, span in set(bio_to_spans(e.tags))] for e in examples]
        predicted_at_span = [
            [(span, label) for label, span in {(label, span) for span, label, _ in sentence}]
            for sentence in predictions
        ]
        return paired_labels(at_span, predicted_at_span, OUTSIDE)

    @classmethod
    def to_json(cls, example: NerExample, prediction: Prediction) -> dict[str, Any]:
        entities = [
            {
                "start": s.start,
                "end": s.end,
                "type": label,
                "text": " ".join(example.tokens[s.start : s.end]),
                "score": float(score),
            }
            for s, label, score in prediction
        ]
        return {"entities": entities}
