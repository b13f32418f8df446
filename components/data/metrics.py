"""Evaluation metrics, as the Shap-CA paper and its peers report them: micro-averaged set matches,

    precision = |gold ∩ pred| / |pred|      recall = |gold ∩ pred| / |gold|      f1 = 2·P·R / (P + R)

(0 where a denominator is 0), over a different kind of item per task (each task's `score` says which:
components/tasks/<task>/task.py), with scores per label beside them. Every scorer returns a :class:`Scores`;
``scores.as_dict("dev")`` gives MLflow metric names such as ``dev_f1``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def safe_div(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _metric_key(prefix: str, *parts: str) -> str:
    """MLflow accepts [A-Za-z0-9_-. /] in metric names; relation labels such as ``/per/loc/place_of_birth`` are
    turned into ``per_loc_place_of_birth`` so that keys stay readable and flat."""
    cleaned = [re.sub(r"[^A-Za-z0-9_.-]+", "_", p).strip("_") for p in parts]
    return "_".join(p for p in [prefix, *cleaned] if p)


# Micro F1 on dev selects the model (the trainer's best epoch) and decides promotion (the registry), for every task:
# the one definition of the selection metric, as a `Scores` key and as the MLflow metric it is logged under.
SELECTION_METRIC = "f1"
SELECTION_METRIC_KEY = _metric_key("dev", SELECTION_METRIC)  # "dev_f1"


@dataclass(frozen=True)
class Scores:
    """Micro precision/recall/F1 with the counts behind them; ``per_type`` holds the same per entity type/relation."""

    precision: float
    recall: float
    f1: float
    support: int  # gold items
    predicted: int  # predicted items
    correct: int  # items in both
    per_type: dict[str, Scores] = field(default_factory=dict)
    accuracy: float | None = None  # where a scorer counts it: share of all items labelled correctly

    @classmethod
    def from_counts(cls, correct: int, predicted: int, support: int, **extra) -> Scores:
        precision = safe_div(correct, predicted)
        recall = safe_div(correct, support)
        f1 = safe_div(2 * precision * recall, precision + recall)
        return cls(precision, recall, f1, support, predicted, correct, **extra)

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat metrics for MLflow: ``{prefix}_precision``, ``{prefix}_f1``, ..., ``{prefix}_{type}_f1`` per type."""
        out = {
            _metric_key(prefix, "precision"): self.precision,
            _metric_key(prefix, "recall"): self.recall,
            _metric_key(prefix, "f1"): self.f1,
            _metric_key(prefix, "support"): float(self.support),
            _metric_key(prefix, "predicted"): float(self.predicted),
            _metric_key(prefix, "correct"): float(self.correct),
        }
        if self.accuracy is not None:
            out[_metric_key(prefix, "accuracy")] = self.accuracy
        for name, sub in sorted(self.per_type.items()):
            for metric in ("precision", "recall", "f1"):
                out[_metric_key(prefix, name, metric)] = getattr(sub, metric)
            out[_metric_key(prefix, name, "support")] = float(sub.support)
        return out

    def per_type_rows(self) -> list[dict[str, float | int | str]]:
        """One row per type plus a ``micro`` row: the per-type table a run logs as an artifact."""
        rows: list[dict[str, float | int | str]] = []
        for name, sub in [*sorted(self.per_type.items()), ("micro", self)]:
            rows.append(
                {
                    "type": name,
                    "precision": round(sub.precision, 6),
                    "recall": round(sub.recall, 6),
                    "f1": round(sub.f1, 6),
                    "support": sub.support,
                    "predicted": sub.predicted,
                    "correct": sub.correct,
                }
            )
        return rows

    def format_table(self) -> str:
        """The per-type table as aligned text (what `per_type_rows` holds), for logs and artifacts."""
        lines = [f"{'type':<32} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8} {'predicted':>9}"]
        for row in self.per_type_rows():
            lines.append(
                f"{row['type']!s:<32} {row['precision']:>9.4f} {row['recall']:>9.4f} {row['f1']:>9.4f} "
                f"{row['support']:>8d} {row['predicted']:>9d}"
            )
        if self.accuracy is not None:
            lines.append(f"accuracy {self.accuracy:.4f}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Counting, shared by the tasks' scorers


def check_lengths(gold: Sequence, pred: Sequence, what: str) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{what}: {len(gold)} gold sentences/instances but {len(pred)} predicted")


def micro_scores(correct: Counter[str], predicted: Counter[str], support: Counter[str], **extra) -> Scores:
    """Micro scores from per-label counts, with per-label scores for every label on either side."""
    per_type = {
        label: Scores.from_counts(correct[label], predicted[label], support[label])
        for label in sorted(set(support) | set(predicted))
    }
    return Scores.from_counts(
        sum(correct.values()), sum(predicted.values()), sum(support.values()), per_type=per_type, **extra
    )


def set_match_scores(
    gold: Sequence[Iterable[Hashable]], pred: Sequence[Iterable[Hashable]], label_of: Callable[[Any], str], what: str
) -> Scores:
    """Micro P/R/F1 of exact item matches, one collection of items per sentence; per label (``label_of(item)``).
    Repeats within a sentence count once."""
    check_lengths(gold, pred, what)
    correct: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    support: Counter[str] = Counter()
    for gold_sentence, pred_sentence in zip(gold, pred, strict=False):
        gold_set, pred_set = set(gold_sentence), set(pred_sentence)
        support.update(map(label_of, gold_set))
        predicted.update(map(label_of, pred_set))
        correct.update(map(label_of, gold_set & pred_set))
    return micro_scores(correct, predicted, support)


def confusion_matrix(
    gold_labels: Sequence[str], pred_labels: Sequence[str], labels: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """``(labels, counts)`` with ``counts[i, j]`` = instances of gold ``labels[i]`` predicted as ``labels[j]``.

    ``labels`` fixes the order (and must cover every label seen); by default the sorted union of both sides.
    """
    check_lengths(gold_labels, pred_labels, "confusion_matrix")
    seen = set(gold_labels) | set(pred_labels)
    if labels is None:
        labels = sorted(seen)
    else:
        missing = seen - set(labels)
        if missing:
            raise ValueError(f"confusion_matrix: labels {sorted(missing)} occur but are not in the given label list")
    index = {label: i for i, label in enumerate(labels)}
    counts = np.zeros((len(labels), len(labels)), dtype=np.int64)  # (gold, pred)
    for gold, pred in zip(gold_labels, pred_labels, strict=False):
        counts[index[gold], index[pred]] += 1
    return list(labels), counts


def paired_labels(
    gold: Iterable[Iterable[tuple[Hashable, str]]], pred: Iterable[Iterable[tuple[Hashable, str]]], nothing: str
) -> tuple[list[str], list[str]]:
    """(gold label, predicted label) pairs of items located by a key (an entity span; a (head, tail) span pair), one
    collection of (key, label) per sentence, for a confusion matrix: each gold item is paired with the label predicted
    at its key (or `nothing`), and each predicted key without a gold item with gold `nothing`, so false positives show
    too."""
    gold_labels, pred_labels = [], []
    for gold_sentence, pred_sentence in zip(gold, pred, strict=False):
        predicted_at = dict(pred_sentence)
        gold_keys = set()
        for key, label in gold_sentence:
            gold_keys.add(key)
            gold_labels.append(label)
            pred_labels.append(predicted_at.get(key, nothing))
        for key, label in predicted_at.items():
            if key not in gold_keys:
                gold_labels.append(nothing)
                pred_labels.append(label)
    return gold_labels, pred_labels
