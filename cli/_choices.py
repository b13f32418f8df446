"""The closed sets the commands accept, as ``Literal`` types: typer shows them in ``--help`` (``<a|b|c>``) and rejects
anything else with a message that lists them (exit code 2). Datasets, splits and published context sets are the data
table's (components/datasets.py). Underscored: the command loader skips it."""

from __future__ import annotations

from typing import Literal

from components.datasets import DatasetName as Dataset
from components.datasets import Generator, GeneratorOrNone, Split

__all__ = ["Backend", "Dataset", "Device", "Dtype", "Generator", "GeneratorOrNone", "Split"]

Backend = Literal["precomputed", "hf", "openai"]
Device = Literal["auto", "cpu", "cuda"]
Dtype = Literal["auto", "fp32", "bf16", "fp16"]
