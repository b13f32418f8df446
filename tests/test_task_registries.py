"""The closed sets of names are written once (components/data/datasets.py) and every registry keyed by them covers
exactly them: a task or dataset added to one and not the others fails here, not in the middle of a run."""

from __future__ import annotations

from typing import get_args

from components.data.datasets import DATASETS, SPLITS, DatasetName, Task
from components.model.heads import TASK_HEADS
from components.validation.suites import TASK_SUITES


def test_every_task_has_a_head_and_validation_suites():
    assert set(TASK_HEADS) == set(get_args(Task)) == {"ner", "re", "joint"}
    assert set(TASK_SUITES) == set(get_args(Task))
    assert all(head.task == task for task, head in TASK_HEADS.items())


def test_dataset_names_are_the_registry_keys_and_their_tasks_are_tasks():
    assert list(DATASETS) == list(get_args(DatasetName))
    assert {spec.task for spec in DATASETS.values()} <= set(get_args(Task))
    assert all(set(spec.files) == set(SPLITS) for spec in DATASETS.values())
