"""The tasks, one folder each, and the registry everything else asks (`get_task(name)`) instead of branching on a
task's name. A folder holds everything the project knows about its task:

    records.py   its typed record, and the reader of its dataset's format
    task.py      the torch-free part: labels and their ids, label arrays, scoring, JSON and serving schema
    checks.py    its data checks (Great Expectations, imported when a suite is built)
    head.py      its nn.Module on the fused token states (forward -> loss and logits, decode)

Shared: base.py (the `Task` every task.py extends), checks.py (the checks' building blocks), layers.py (the torch
pieces the heads share). Importing this package, or a task's torch-free part, does not import torch (an import-linter
contract in pyproject.toml keeps it so): `get_task(name).head_class()` does. A new task is a new folder and one entry
in TASKS; the datasets that pose it name it (components/datasets.py).
"""

from __future__ import annotations

from typing import Literal

from components.tasks.base import Task
from components.tasks.joint import JointTask
from components.tasks.ner import NerTask
from components.tasks.re import ReTask

TaskName = Literal["ner", "re", "joint"]  # the keys of TASKS, for typed configs and the dataset table
TASKS: dict[str, type[Task]] = {task.name: task for task in (NerTask, ReTask, JointTask)}


def get_task(name: str) -> type[Task]:
    if name not in TASKS:
        raise ValueError(f"task must be one of {', '.join(repr(t) for t in TASKS)}, got {name!r}")
    return TASKS[name]


__all__ = ["TASKS", "Task", "TaskName", "get_task"]
