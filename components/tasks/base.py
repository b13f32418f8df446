"""What every task answers, without torch. One subclass per task (components/tasks/<task>/task.py):

- its labels and their ids (`label_ids`: the one place the id order is built);
- the words the text encoder reads (`input_words`) and the label arrays of a batch (`encode_labels`: plain numpy
  arrays, which the processor turns into the batch's `labels` tensors);
- the scoring of predictions against gold records (`score`, `confusion`);
- what consumers see: the JSON of a prediction (`to_json`), the serving row it takes (`serving_spans`,
  `serving_record`, `serving_example`) and the label columns of a run's logged datasets (`label_columns`);
- its data checks (`checks`, components/tasks/checks.py) and its head's settings (`settings`, `model.head`).

The torch half, the head (`nn.Module`: forward -> loss and logits, decode), is `components/tasks/<task>/head.py`,
imported only by `head_class()`, so that validation, run inputs and the serving signature never load torch.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from components.data.metrics import Scores
from components.data.records import Example, Span
from components.tasks.checks import TaskChecks

LabelIds = dict[str, dict[str, int]]  # "tags" / "relations" -> label -> id
LabelArrays = dict[str, np.ndarray]  # the batch's label arrays by name, int64


class HeadSettings(BaseModel):
    """A head's own settings, `model.head` of the model config: none unless the task defines some."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class EncodedWords:
    """What label encoding reads of the encoder's view of a batch, as plain lists (the processor fills it)."""

    width: int  # W: the batch's word columns
    kept: list[int]  # per example, how many of its words have a state (the rest fell beyond the window)
    input_ids: list[list[int]]  # per example, the text encoder's token ids
    special_ids: dict[str, int]  # the task's special tokens and their ids in the tokenizer
    max_text_tokens: int  # the window, for messages


def check_span(example: Example, span: Span, what: str) -> None:
    if not span.fits(len(example.tokens)):
        raise ValueError(
            f"example {example.id}: {what} {span} is not a non-empty span inside its {len(example.tokens)} tokens"
        )


def label_id(ids: dict[str, int], example: Example, label: str, what: str, where: str = "") -> int:
    if label not in ids:
        raise ValueError(f"example {example.id}: {what} {label!r}{where} is not one of the model's labels {list(ids)}")
    return ids[label]


def json_spans(spans: Iterable[Span]) -> str:
    return json.dumps([[s.start, s.end] for s in spans])


class Task:
    """A task's knowledge. `labels` are the model's labels as the dataset table lists them (components/datasets.py)."""

    name: ClassVar[str]
    description: ClassVar[str]  # what the model card calls the task
    example_type: ClassVar[type[Example]]
    head_name: ClassVar[str]  # the nn.Module in the task's head.py
    checks: ClassVar[type[TaskChecks]] = TaskChecks
    settings: ClassVar[type[HeadSettings]] = HeadSettings
    special_tokens: ClassVar[tuple[str, ...]] = ()  # added to the text tokenizer, with embeddings of their own
    serving_spans: ClassVar[tuple[str, ...]] = ()  # the [start, end) span columns a serving row must carry
    warns_on_cut: ClassVar[bool] = True  # a tagger drops the words past the window; others fail the example instead
    target_column: ClassVar[str]  # the gold-label column of `label_columns`: a run's MLflow dataset target

    @classmethod
    def head_class(cls) -> type:
        """The task's head (`<task>/head.py`, beside this task's module), imported now: the one door to torch."""
        package = cls.__module__.rpartition(".")[0]
        return getattr(importlib.import_module(f"{package}.head"), cls.head_name)

    @classmethod
    def head_settings(cls, values: dict[str, Any]) -> HeadSettings:
        """`model.head` validated against the task's settings, with their defaults filled in."""
        try:
            return cls.settings.model_validate(values)
        except ValueError as error:
            known = ", ".join(cls.settings.model_fields) or "none"
            raise ValueError(
                f"model.head: not a setting of the {cls.name} head (its settings: {known}): {error}"
            ) from None

    @classmethod
    def check_labels(cls, labels: list[str]) -> list[str]:
        labels = list(labels)
        if not labels or len(set(labels)) != len(labels):
            raise ValueError(f"{cls.name}: labels must be a non-empty list without repeats, got {labels}")
        return labels

    @classmethod
    def label_ids(cls, labels: list[str]) -> LabelIds:
        """The label maps of a batch's label arrays: the one place their id order is built."""
        raise NotImplementedError

    @classmethod
    def input_words(cls, example: Any) -> list[str]:
        """The words the text encoder reads for `example` (before the window cuts them)."""
        if not isinstance(example, cls.example_type):
            raise ValueError(
                f"example {example.id}: the {cls.name} task needs {cls.example_type.__name__} records, "
                f"got {type(example).__name__}"
            )
        return list(example.tokens)

    @classmethod
    def encode_labels(cls, examples: Sequence[Any], ids: LabelIds, words: EncodedWords) -> LabelArrays:
        """The batch's label arrays from the records' gold labels."""
        raise NotImplementedError

    @classmethod
    def label_columns(cls, example: Any) -> dict[str, str]:
        """The example's gold labels as string columns (a run's MLflow dataset of a split, components/tracking)."""
        raise NotImplementedError

    @classmethod
    def serving_record(cls, row_id: str, tokens: list[str], spans: dict[str, Span], labels: list[str]) -> Example:
        """A consumer's row as the record the processor takes; its gold labels are placeholders prediction ignores."""
        raise NotImplementedError

    @classmethod
    def serving_example(cls) -> dict[str, object]:
        """One consumer row of this task (its text and `serving_spans`): the model signature's input example."""
        return {"text": "Obama visits the Golden Gate Bridge in San Francisco"}

    @classmethod
    def score(cls, examples: Sequence[Any], predictions: Sequence[Any]) -> Scores:
        raise NotImplementedError

    @classmethod
    def confusion(cls, examples: Sequence[Any], predictions: Sequence[Any]) -> tuple[list[str], list[str]]:
        """Paired (gold, predicted) labels for a confusion matrix."""
        raise NotImplementedError

    @classmethod
    def to_json(cls, example: Any, prediction: Any) -> dict[str, Any]:
        """A prediction as the JSON a consumer reads (the serving contract, components/serving/pyfunc.py)."""
        raise NotImplementedError
