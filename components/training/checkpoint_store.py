"""Epoch checkpoints on shared storage: a retry on any host resumes where the last attempt stopped.

The trainer keeps its checkpoint in a local directory (checkpoint.py: `last/` after every epoch, `best/` when dev
improved). With `train.checkpoint_url` set (an `s3://` URL or a directory every host mounts), each epoch's checkpoint
is also published there, and a resumed training on a host that has none pulls it first:

    <url>/run.json                       {"mlflow_run_id": ...}: written as soon as the MLflow run is open
    <url>/epochs/000002/last/...         model.safetensors, trainer_state.pt (weights, optimizer, scheduler, RNG
                                         states, epoch: the sampler's order is seeded by seed + epoch)
    <url>/epochs/000002/best/...         the best model so far, only in the epoch that saved it
    <url>/LATEST.json                    which `last` and `best` are current, with the sha256 of every file

Atomic: an epoch's files go under a prefix of their own first, and `LATEST.json`, one small object, is written last.
A reader starts from `LATEST.json`, so it sees the previous checkpoint or the new one, never a mix or a half; a kill
before `LATEST.json` leaves an orphan prefix that the next push removes. Files are checked against their sha256 on
the way back (a mismatch names the object). Prefixes that `LATEST.json` no longer names are deleted after it moved on.

`run.json` is there before the first epoch ends, so an attempt killed in epoch 1 still tells the next one which MLflow
run to continue, and no run is left RUNNING.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from components.common.object_store import ObjectStore, open_store
from components.training.checkpoint import write_atomically

log = logging.getLogger(__name__)

POINTER = "LATEST.json"
RUN_RECORD = "run.json"
FORMAT, FORMAT_VERSION = "shapca-checkpoint-pointer", 1
PARTS = ("last", "best")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(directory: Path) -> dict[str, str]:
    """relative path -> sha256 of every file of a checkpoint part (`best/` holds the encoders' subdirectories)."""
    return {p.relative_to(directory).as_posix(): _sha256(p) for p in sorted(directory.rglob("*")) if p.is_file()}


class CheckpointStore:
    """The published checkpoints of one training (one flow run: every attempt uses the same URL)."""

    def __init__(self, location: str | Path, store: ObjectStore | None = None):
        self.store = store or open_store(location)
        self.url = self.store.url

    # -- the MLflow run the training logs to

    def save_run_id(self, run_id: str) -> None:
        self.store.put_bytes(RUN_RECORD, json.dumps({"mlflow_run_id": run_id}).encode())

    def run_id(self) -> str | None:
        raw = self.store.get_bytes(RUN_RECORD)
        return json.loads(raw)["mlflow_run_id"] if raw is not None else None

    # -- epochs

    def pointer(self) -> dict | None:
        raw = self.store.get_bytes(POINTER)
        if raw is None:
            return None
        pointer = json.loads(raw)
        if pointer.get("format") != FORMAT or pointer.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{self.url}/{POINTER}: expected {FORMAT} version {FORMAT_VERSION}, got {pointer!r}")
        return pointer

    def push(self, checkpoint_dir: Path, epoch: int) -> None:
        """Publish `<checkpoint_dir>/last` (and `best`, when it changed) as epoch `epoch`, then point at it."""
        checkpoint_dir = Path(checkpoint_dir)
        previous = self.pointer() or {}
        prefix = f"epochs/{epoch:06d}"
        pointer: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "epoch": epoch}
        for part in PARTS:
            local = checkpoint_dir / part
            if not local.is_dir():
                continue
            files = _files(local)
            if part == "best" and previous.get("best", {}).get("files") == files:
                pointer["best"] = previous["best"]  # unchanged since an earlier epoch: point at its copy
                continue
            for name in files:
                self.store.put_file(f"{prefix}/{part}/{name}", local / name)
            pointer[part] = {"prefix": f"{prefix}/{part}", "files": files}
        self.store.put_bytes(POINTER, json.dumps(pointer, indent=1).encode())  # last: this publishes the epoch
        kept = tuple(pointer[p]["prefix"] + "/" for p in PARTS if p in pointer)
        stale = [name for name in self.store.list("epochs/") if not name.startswith(kept)]
        self.store.delete(stale)
        log.info("checkpoint of epoch %d published to %s", epoch, self.url)

    def pull(self, checkpoint_dir: Path) -> int | None:
        """Download the published checkpoint into `checkpoint_dir` (`last/`, `best/`, each swapped in atomically);
        returns its epoch, or None when nothing is published yet."""
        pointer = self.pointer()
        if pointer is None:
            return None
        for part in PARTS:
            if part in pointer:
                write_atomically(Path(checkpoint_dir) / part, functools.partial(self._download, pointer[part]))
        log.info("pulled the checkpoint of epoch %d from %s", pointer["epoch"], self.url)
        return pointer["epoch"]

    def _download(self, entry: dict, target: Path) -> None:
        for name, expected in entry["files"].items():
            where = f"{self.url}/{entry['prefix']}/{name}"
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            if not self.store.get_file(f"{entry['prefix']}/{name}", target / name):
                raise FileNotFoundError(f"{where}: named by {POINTER} but missing")
            if (actual := _sha256(target / name)) != expected:
                raise ValueError(f"{where}: sha256 {actual}, {POINTER} says {expected}: the object was damaged")

    def clear(self) -> None:
        """Remove everything published (the training finished: its model is in MLflow)."""
        self.store.delete(self.store.list())


def restore_checkpoint(location: str | Path, out_dir: Path, run_id_file: str) -> int | None:
    """Before a resumed training: fill `out_dir` with what the last attempt published (on any host), which wins over
    whatever this host holds: the checkpoint (`out_dir/checkpoints`) and the MLflow run to continue
    (`out_dir/<run_id_file>`). Returns the epoch pulled (None: nothing was published)."""
    store = CheckpointStore(location)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = store.run_id()
    if run_id is not None:
        (out_dir / run_id_file).write_text(run_id)
    return store.pull(out_dir / "checkpoints")
