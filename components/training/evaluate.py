"""Score a model on a split: predict batch by batch, then compare with the gold records using `metrics`.

Prediction formats (from `ShapCA.predict`): NER a list of (Span, type, score) per sentence; RE one (label, score) per
instance; joint a list of (Triple, score) per sentence.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from components.data.bio import OUTSIDE, bio_to_spans
from components.data.records import NO_RELATION, Example
from components.training.data import TrainingData
from components.training.metrics import Scores, re_scores, span_scores, triple_scores

SELECTION_METRIC = "f1"  # micro F1 on dev selects the model and decides promotion, for every task


@dataclass
class Evaluation:
    scores: Scores
    predictions: list
    confusion_gold: list[str]  # paired labels for a confusion matrix (entity types / relations), see _confusion
    confusion_pred: list[str]

    @property
    def metrics(self) -> dict[str, float]:
        return self.scores.as_dict()


@torch.no_grad()
def predict_examples(model, data: TrainingData, examples: list[Example], batch_size: int = 32, device=None) -> list:
    """Predictions in the order of `examples`, each batch with its contexts and images from `data`."""
    device = device or torch.device("cpu")
    model.eval()
    collator = model.collator()
    predictions: list = []
    for start in tqdm(range(0, len(examples), batch_size), desc="predict", leave=False, disable=len(examples) < 512):
        batch = data.collate(collator, examples[start : start + batch_size]).to(device)
        predictions += model.predict(batch)
    return predictions


def _confusion(
    gold: Iterable[Iterable[tuple[Hashable, str]]], pred: Iterable[Iterable[tuple[Hashable, str]]], nothing: str
) -> tuple[list[str], list[str]]:
    """(gold label, predicted label) pairs of items located by a key (an entity span; a (head, tail) span pair), one
    collection of (key, label) per sentence: each gold item is paired with the label predicted at its key (or
    `nothing`), and each predicted key without a gold item with gold `nothing`, so false positives show too."""
    gold_labels, pred_labels = [], []
    for gold_sentence, pred_sentence in zip(gold, pred):
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


def score_predictions(task: str, examples: list[Example], predictions: list) -> Evaluation:
    if task == "ner":
        gold = [set(bio_to_spans(e.tags)) for e in examples]
        pred = [{(label, span) for span, label, _ in sentence} for sentence in predictions]
        at_span = [[(span, label) for label, span in sentence] for sentence in gold]
        predicted_at_span = [[(span, label) for label, span in sentence] for sentence in pred]
        return Evaluation(span_scores(gold, pred), predictions, *_confusion(at_span, predicted_at_span, OUTSIDE))
    if task == "re":
        gold_labels = [e.relation for e in examples]
        pred_labels = [label for label, _ in predictions]
        return Evaluation(re_scores(gold_labels, pred_labels), predictions, gold_labels, pred_labels)
    if task == "joint":
        gold = [set(e.triples) for e in examples]
        pred = [{triple for triple, _ in sentence} for sentence in predictions]
        at_pair = [[((t.head, t.tail), t.relation) for t in sentence] for sentence in gold]
        predicted_at_pair = [[((t.head, t.tail), t.relation) for t in sentence] for sentence in pred]
        confusion = _confusion(at_pair, predicted_at_pair, NO_RELATION)
        return Evaluation(triple_scores(gold, pred), predictions, *confusion)
    raise ValueError(f"unknown task {task!r}; expected ner, re or joint")


def evaluate_split(model, data: TrainingData, split: str, batch_size: int = 32, device=None) -> Evaluation:
    examples = data.splits[split]
    predictions = predict_examples(model, data, examples, batch_size, device)
    return score_predictions(data.task, examples, predictions)
