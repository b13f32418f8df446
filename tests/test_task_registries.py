"""The closed sets of names are written once (the task registry, components/tasks/__init__.py, and the dataset table,
components/datasets.py) and everything keyed by them covers exactly them: a task or dataset added to one and not the
others fails here, not in the middle of a run. A task folder holds every part of its task, and importing the registry
loads no torch."""

from __future__ import annotations

import subprocess
import sys
from typing import get_args

import pytest

from components.datasets import DATASETS, SPLITS, DatasetName
from components.tasks import TASKS, TaskName, get_task
from components.tasks.checks import TaskChecks
from components.tasks.layers import TaskHead


def test_every_task_has_its_head_checks_and_settings_in_its_folder():
    assert list(TASKS) == list(get_args(TaskName)) == ["ner", "re", "joint"]
    for name, task in TASKS.items():
        assert task.name == name
        folder = f"components.tasks.{name}"
        head = task.head_class()
        assert issubclass(head, TaskHead) and head.task is task and head.__module__ == f"{folder}.head"
        assert issubclass(task.checks, TaskChecks) and task.checks.__module__ == f"{folder}.checks"
        assert task.__module__ == f"{folder}.task" and task.example_type.__module__ == f"{folder}.records"
    with pytest.raises(ValueError, match="task must be one of 'ner', 're', 'joint'"):
        get_task("pos")


def test_dataset_names_are_the_registry_keys_and_their_tasks_are_tasks():
    assert list(DATASETS) == list(get_args(DatasetName))
    assert {spec.task for spec in DATASETS.values()} <= set(TASKS)
    assert all(set(spec.files) == set(SPLITS) for spec in DATASETS.values())


def test_the_registry_the_dataset_table_and_validation_load_no_torch():
    """What import-linter checks statically, checked once at run time: the torch-free parts import no torch."""
    code = (
        "import sys; import components.tasks, components.datasets, components.validation, components.serving.limits; "
        "import components.tracking.run_inputs; print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
