"""Score a model on a split: predict batch by batch, then compare with the gold records using `metrics`.

Prediction formats (from `ShapCA.predict`): NER a list of (Span, type, score) per sentence; RE one (label, score) per
instance; joint a list of (Triple, score) per sentence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from components.data.records import Example
from components.training.data import TrainingData
from components.training.metrics import Scores, re_scores, span_scores, triple_scores

SELECTION_METRIC = "f1"  # micro F1 on dev selects the model and decides promotion, for every task
NO_MATCH = "O"  # the "nothing there" row/column of an entity confusion matrix


@dataclass
class Evaluation:
    scores: Scores
    predictions: list
    confusion_gold: list[str]  # paired labels for a confusion matrix (entity types / relations)
    confusion_pred: list[str]

    @property
    def metrics(self) -> dict[str, float]:
        return self.scores.as_dict()


@torch.no_grad()
def predict_examples(model, examples: list[Example], contexts=None, images=None, batch_size: int = 32, device=None):
    """Predictions in the order of `examples`."""
    device = device or torch.device("cpu")
    model.eval()
    collator = model.collator()
    predictions: list = []
    for start in tqdm(range(0, len(examples), batch_size), desc="predict", leave=False, disable=len(examples) < 512):
        chunk = examples[start : start + batch_size]
        batch_images = images.batch([e.image_id for e in chunk]) if images is not None else None
        batch = collator(chunk, contexts=contexts, images=batch_images).to(device)
        predictions += model.predict(batch)
    return predictions


def _entity_confusion(gold: list[set], pred: list[set]) -> tuple[list[str], list[str]]:
    """Entity-level confusion: a gold span is paired with the type predicted on exactly that span (or O); a predicted
    span with no gold span is paired with gold O."""
    gold_labels, pred_labels = [], []
    for gold_sentence, pred_sentence in zip(gold, pred):
        predicted_at = {span: label for label, span in pred_sentence}
        gold_at = {span: label for label, span in gold_sentence}
        for span, label in gold_at.items():
            gold_labels.append(label)
            pred_labels.append(predicted_at.get(span, NO_MATCH))
        for span, label in predicted_at.items():
            if span not in gold_at:
                gold_labels.append(NO_MATCH)
                pred_labels.append(label)
    return gold_labels, pred_labels


def score_predictions(task: str, examples: list[Example], predictions: list) -> Evaluation:
    if task == "ner":
        from components.training.metrics import bio_to_spans

        gold = [set(bio_to_spans(e.tags)) for e in examples]
        pred = [{(label, span) for span, label, _ in sentence} for sentence in predictions]
        return Evaluation(span_scores(gold, pred), predictions, *_entity_confusion(gold, pred))
    if task == "re":
        gold_labels = [e.relation for e in examples]
        pred_labels = [label for label, _ in predictions]
        return Evaluation(re_scores(gold_labels, pred_labels), predictions, gold_labels, pred_labels)
    if task == "joint":
        gold = [set(e.triples) for e in examples]
        pred = [{triple for triple, _ in sentence} for sentence in predictions]
        gold_labels, pred_labels = [], []
        for gold_sentence, pred_sentence in zip(gold, pred):
            predicted_at = {(t.head, t.tail): t.relation for t in pred_sentence}
            for t in gold_sentence:
                gold_labels.append(t.relation)
                pred_labels.append(predicted_at.get((t.head, t.tail), "None"))
        return Evaluation(triple_scores(gold, pred), predictions, gold_labels, pred_labels)
    raise ValueError(f"unknown task {task!r}; expected ner, re or joint")


def evaluate_split(model, data: TrainingData, split: str, batch_size: int = 32, device=None) -> Evaluation:
    examples = data.splits[split]
    contexts = data.contexts.contexts if data.contexts is not None else None
    predictions = predict_examples(model, examples, contexts, data.images, batch_size, device)
    return score_predictions(data.task, examples, predictions)
