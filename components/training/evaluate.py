"""Score a model on a split: predict batch by batch, then compare with the gold records using `metrics`.

Predictions are in the form of the task's head's `decode` (`ShapCA.predict`), which the task's `score` and
`confusion` read (components/tasks/<task>/).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from components.data.metrics import Scores
from components.data.records import Example
from components.tasks import get_task
from components.training.data import TrainingData


@dataclass
class Evaluation:
    scores: Scores
    predictions: list
    confusion_gold: list[str]  # paired labels for a confusion matrix (entity types / relations): the task's `confusion`
    confusion_pred: list[str]

    @property
    def metrics(self) -> dict[str, float]:
        return self.scores.as_dict()


@torch.no_grad()
def predict_examples(model, data: TrainingData, examples: list[Example], batch_size: int = 32, device=None) -> list:
    """Predictions in the order of `examples`, each batch with its contexts and images from `data`."""
    device = device or torch.device("cpu")
    model.eval()
    dataset = data.example_dataset(examples)
    predictions: list = []
    for start in tqdm(range(0, len(examples), batch_size), desc="predict", leave=False, disable=len(examples) < 512):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(examples)))]
        predictions += model.predict(model.processor(items).to(device))
    return predictions


def score_predictions(task: str, examples: list[Example], predictions: list) -> Evaluation:
    rules = get_task(task)
    return Evaluation(rules.score(examples, predictions), predictions, *rules.confusion(examples, predictions))


def evaluate_split(model, data: TrainingData, split: str, batch_size: int = 32, device=None) -> Evaluation:
    examples = data.splits[split]
    predictions = predict_examples(model, data, examples, batch_size, device)
    return score_predictions(data.task, examples, predictions)
