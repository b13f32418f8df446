"""Lineage of a run: which data, code, contexts and encoder weights produced it.

- data version: the md5 DVC recorded for ``data/`` in ``data.dvc`` (``<md5>.dir`` for a directory);
- code version: the git commit of the project (``"unknown"`` outside a git checkout), and whether the tree was dirty;
- contexts: the generator name and :meth:`ContextSet.content_hash` (sha256 over sorted (image_id, text) pairs);
- encoders: sha256 of each weight file (``*.safetensors`` by default) under each encoder directory.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from components.data.records import ContextSet

UNKNOWN = "unknown"


def data_version(project_root: str | Path, dvc_file: str = "data.dvc") -> str:
    """The md5 of the DVC-tracked data, as written in ``data.dvc`` (``outs[*].md5`` of the ``data`` output).

    Raises FileNotFoundError when the pointer is missing and ValueError naming the file and field when it is malformed.
    """
    path = Path(project_root) / dvc_file
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no DVC pointer file; the data version comes from its outs[].md5")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from exc
    outs = content.get("outs") if isinstance(content, dict) else None
    if not isinstance(outs, list) or not outs:
        raise ValueError(f"{path}: expected a non-empty 'outs' list (DVC pointer format)")
    # One pointer may track several outputs; the one whose path is "data" is the benchmark data.
    chosen = next((o for o in outs if isinstance(o, dict) and o.get("path") == "data"), outs[0])
    md5 = chosen.get("md5") if isinstance(chosen, dict) else None
    if not isinstance(md5, str) or not md5:
        raise ValueError(f"{path}: 'outs[].md5' missing or not a string for output {chosen!r}")
    return md5


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


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_named_files(files: list[tuple[str, Path]]) -> str:
    """One sha256 over (name, bytes) of each file, in the order given: a rename or any edit changes it."""
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode("utf-8") + b"\0")
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


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
    encoder_dirs: dict[str, str | Path] | None = None,
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
