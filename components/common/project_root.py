"""Which directory is the project: where `mlruns/`, `gx/`, `configs/` and `data.dvc` are found.

In order: an explicit argument, ``SHAPCA_PROJECT_ROOT``, the nearest directory at or above the working directory
that holds ``data.dvc`` or ``.dvc/`` (so running from a subdirectory still finds the project), and finally the
working directory itself (an installed package run elsewhere keeps its runs next to where it ran).
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT_ENV = "SHAPCA_PROJECT_ROOT"
_PROJECT_MARKERS = ("data.dvc", ".dvc")


def find_project_root(explicit: str | Path | None = None) -> Path:
    """The project directory (see the module docstring for the order)."""
    if explicit is not None:
        return Path(explicit).resolve()
    from_env = os.environ.get(PROJECT_ROOT_ENV, "").strip()
    if from_env:
        return Path(from_env).resolve()
    cwd = Path.cwd().resolve()
    for directory in (cwd, *cwd.parents):
        if any((directory / marker).exists() for marker in _PROJECT_MARKERS):
            return directory
    return cwd
