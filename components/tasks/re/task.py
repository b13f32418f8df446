"""MRE, torch-free: entity markers around the head and tail, relation ids, scores over the non-None relations,
relations as JSON.

Scores: one (instance, relation) per instance whose relation is not ``None`` (the MNRE convention of HVPNeT and
MKGformer): precision counts the non-None predictions, recall the non-None gold labels; accuracy is over all
instances.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from components.data.metrics import Scores, check_lengths, micro_scores, safe_div
from components.data.records import Span
from components.tasks.base import EncodedWords, LabelArrays, LabelIds, Task, check_span, json_spans, label_id
from components.tasks.re.checks import ReChecks
from components.tasks.re.records import NO_RELATION, ReExample

Prediction = tuple[str, float]  # an instance's (relation, score), the head's `decode`


def re_scores(gold_labels: Sequence[str], pred_labels: Sequence[str], none_label: str = NO_RELATION) -> Scores:
    """Micro P/R/F1 over the non-None relations, per-relation scores, and accuracy over all instances.

    correct = instances with gold == pred != None; predicted = pred != None; support = gold != None.
    """
    check_lengths(gold_labels, pred_labels, "re_scores")
    correct: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    support: Counter[str] = Counter()
    exact = 0
    for gold, pred in zip(gold_labels, pred_labels, strict=False):
        exact += gold == pred
        if gold != none_label:
            support[gold] += 1
        if pred != none_label:
            predicted[pred] += 1
            if pred == gold:
                correct[gold] += 1
    return micro_scores(correct, predicted, support, accuracy=safe_div(exact, len(gold_labels)))


class ReTask(Task):
    name = "re"
    description = "multimodal relation extraction (one relation per head/tail entity pair)"
    example_type = ReExample
    head_name = "ReHead"
    checks = ReChecks
    target_column = "relation"
    # Entity markers, wrapped around the head and tail spans; whole tokens with embeddings of their own.
    HEAD_START, HEAD_END, TAIL_START, TAIL_END = "<h>", "</h>", "<t>", "</t>"
    special_tokens = (HEAD_START, HEAD_END, TAIL_START, TAIL_END)
    serving_spans = ("head", "tail")
    warns_on_cut = False

    @classmethod
    def label_ids(cls, labels: list[str]) -> LabelIds:
        return {"relations": {r: i for i, r in enumerate(labels)}}

    @classmethod
    def input_words(cls, example: Any) -> list[str]:
        """Words with <h> ... </h> and <t> ... </t> around the head and tail (closing markers first where they meet)."""
        super().input_words(example)
        check_span(example, example.head, "head")
        check_span(example, example.tail, "tail")
        before: dict[int, list[str]] = {}
        for position, marker in [
            (example.head.end, cls.HEAD_END),
            (example.tail.end, cls.TAIL_END),
            (example.head.start, cls.HEAD_START),
            (example.tail.start, cls.TAIL_START),
        ]:
            before.setdefault(position, []).append(marker)
        words: list[str] = []
        for i in range(len(example.tokens) + 1):
            words += before.get(i, [])
            if i < len(example.tokens):
                words.append(example.tokens[i])
        return words

    @classmethod
    def encode_labels(cls, examples: Sequence[ReExample], ids: LabelIds, words: EncodedWords) -> LabelArrays:
        """head_marker, tail_marker (B,): the positions of <h> and <t> in the encoder's tokens; relation (B,)."""
        markers = [words.special_ids[cls.HEAD_START], words.special_ids[cls.TAIL_START]]
        head, tail = [], []
        for ex, input_ids in zip(examples, words.input_ids, strict=True):
            if not all(marker in input_ids for marker in markers):
                raise ValueError(
                    f"example {ex.id}: an entity marker falls beyond model.max_text_tokens="
                    f"{words.max_text_tokens}; raise it to read this sentence"
                )
            head.append(input_ids.index(markers[0]))
            tail.append(input_ids.index(markers[1]))
        relation = [label_id(ids["relations"], ex, ex.relation, "relation") for ex in examples]
        return {
            "head_marker": np.array(head, dtype=np.int64),
            "tail_marker": np.array(tail, dtype=np.int64),
            "relation": np.array(relation, dtype=np.int64),
        }

    @classmethod
    def label_columns(cls, example: ReExample) -> dict[str, str]:
        return {"head": json_spans([example.head]), "tail": json_spans([example.tail]), "relation": example.relation}

    @classmethod
    def serving_example(cls) -> dict[str, object]:
        # the pair "Obama", "the Golden Gate Bridge"
        return {"text": "Obama visits the Golden Gate Bridge", "head": [0, 1], "tail": [2, 5]}

    @classmethod
    def serving_record(cls, row_id: str, tokens: list[str], spans: dict[str, Span], labels: list[str]) -> ReExample:
        # The relation is a placeholder: the model's first label, which every RE model has.
        return ReExample(
            id=row_id, image_id=row_id, tokens=tokens, head=spans["head"], tail=spans["tail"], relation=labels[0]
        )

    @classmethod
    def score(cls, examples: Sequence[ReExample], predictions: Sequence[Prediction]) -> Scores:
        return re_scores([e.relation for e in examples], [label for label, _ in predictions])

    @classmethod
    def confusion(cls, examples: Sequence[ReExample], predictions: Sequence[Prediction]) -> tuple[list[str], list[str]]:
        return [e.relation for e in examples], [label for label, _ in predictions]

    @classmethod
    def to_json(cls, example: ReExample, prediction: Prediction) -> dict[str, Any]:
        label, score = prediction
        return {"relation": label, "score": float(score)}
