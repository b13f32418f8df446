"""Fixtures shared by the whole suite. The real benchmark data comes from `dvc pull` (make setup)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Two cores here: keep torch from oversubscribing them when tests run next to servers.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Nothing may reach a model hub, in tests or anywhere else.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The DVC-materialised benchmark data; a clear failure (not a skip) when setup has not pulled it."""
    path = PROJECT_ROOT / "data"
    if not (path / "twitter2017" / "train.txt").is_file():
        pytest.fail(f"{path} is not materialised: run `make setup` (it runs `dvc pull`) first")
    return path
