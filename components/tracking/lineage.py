"""Lineage of a run: which data, code, contexts and encoder weights produced it.

- data version: the md5 DVC recorded for ``data/`` in ``data.dvc`` (``<md5>.dir`` for a directory);
- code version: the git commit of the project (``"unknown"`` outside a git checkout), and whether the tree was dirty;
- contexts: the generator name and :meth:`ContextSet.content_hash` (sha256 over sorted (image_id, text) pairs);
- encoders: sha256 of each weight file (``*.safetensors`` by default) under each encoder directory.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from components.common.dvc_pointer import read_dvc_pointer
from components.common.hashing import sha256_file
from components.data.records import ContextSet

UNKNOWN = "unknown"


def data_version(project_root: str | Path, dvc_file: str = "data.dvc") -> str:
    """The md5 of the DVC-tracked data as ``data.dvc`` records it (``<md5>.dir``); errors as read_dvc_pointer's."""
    return read_dvc_pointer(Path(project_root) / dvc_file).md5


def _git(project_root: Path, *args: str) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    try:
        done = subprocess.run(
            [git, "-C", str(project_root), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit(project_root: str | Path) -> str:
    """The HEAD commit sha of the checkout that holds ``project_root``; ``"unknown"`` outside git, never raises."""
    return _git(Path(project_root), "rev-parse", "HEAD") or UNKNOWN


def git_dirty(project_root: str | Path) -> bool | None:
    """Whether tracked files differ from HEAD (untracked files do not count); None outside git."""
    status = _git(Path(project_root), "status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def dir_checksums(directory: str | Path, pattern: str = "*") -> dict[str, str]:
    """``{relative posix path: sha256}`` for the files under ``directory`` matching ``pattern`` (``Path.glob``
    syntax: ``"*.safetensors"``, ``"**/*.json"``), sorted by path."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    files = sorted(p for p in root.glob(pattern) if p.is_file())
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in files}


def context_set_hash(contexts: ContextSet | None) -> str:
    """The content hash of the context set a run uses; ``"none"`` for a run without contexts."""
    return "none" if contexts is None else contexts.content_hash()


@dataclass(frozen=True)
class Lineage:
    data_version: str
    git_commit: str
    git_dirty: bool | None
    context_generator: str
    context_hash: str
    encoder_checksums: dict[str, str] = field(default_factory=dict)  # "<encoder>/<file>" -> sha256

    def as_params(self) -> dict[str, str]:
        """MLflow params (strings): the data and code versions and one ``lineage.encoder.<encoder>/<file>`` entry per
        weight file. The context set is not a param: a run logs it as a dataset with a digest, and as an artifact
        (components/tracking/run_inputs.py). The data version stays a param besides the datasets' source because the
        registry compares versions on it (``params.lineage.data_version``)."""
        params = {
            "lineage.data_version": self.data_version,
            "lineage.git_commit": self.git_commit,
            "lineage.git_dirty": str(self.git_dirty),
        }
        for name, checksum in sorted(self.encoder_checksums.items()):
            params[f"lineage.encoder.{name}"] = checksum
        return params


def collect_lineage(
    project_root: str | Path,
    contexts: ContextSet | None,
    encoder_dirs: Mapping[str, str | Path] | None = None,
    weight_pattern: str = "*.safetensors",
) -> Lineage:
    """Everything above for one run. ``encoder_dirs`` maps a role (``"text"``, ``"image"``) to a local model dir."""
    checksums: dict[str, str] = {}
    for role, directory in (encoder_dirs or {}).items():
        found = dir_checksums(directory, weight_pattern)
        if not found:
            raise FileNotFoundError(f"{directory}: no files matching {weight_pattern!r} for encoder {role!r}")
        checksums.update({f"{role}/{name}": digest for name, digest in found.items()})
    return Lineage(
        data_version=data_version(project_root),
        git_commit=git_commit(project_root),
        git_dirty=git_dirty(project_root),
        context_generator=contexts.generator if contexts is not None else "none",
        context_hash=context_set_hash(contexts),
        encoder_checksums=checksums,
    )
