"""Per-epoch checkpoints that an interrupted run resumes from without losing or repeating an epoch.

`<output_dir>/checkpoints/last/` holds
  - `model.safetensors`: the weights (safetensors: no code runs on load),
  - `trainer_state.pt`: optimizer, scheduler, RNG states, epoch and history, read back with `weights_only=True`.
The best model so far (by dev metric) is saved separately with `save_pretrained` under `best/`.

Crash safety. `last/` and `best/` are each written to a temporary sibling (`last.tmp/`), every file and the directory
fsynced, then swapped in: `last` -> `last.old`, `last.tmp` -> `last`, parent directory fsynced, `last.old` removed. A
kill at any point leaves either the previous or the new directory complete; a kill between the two renames leaves
`last.old` and no `last`, which `recover_swap` (run by every reader) renames back, with a WARNING.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)


@dataclass
class TrainerState:
    config_hash: str = ""  # what the checkpoint trains (components.config.config_hash): a resume must match it
    epoch: int = 0  # epochs completed
    best_metric: float = float("-inf")
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0  # training time of every part so far (a resumed run adds its own)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Every file under root, then every directory bottom-up: the data is on disk before a rename publishes it."""
    for directory, _, files in os.walk(root, topdown=False):
        for name in files:
            _fsync_path(Path(directory) / name)
        _fsync_path(Path(directory))


def recover_swap(final: Path) -> None:
    """Finish or undo a swap a kill interrupted: `final.old` without `final` is the last complete version."""
    final = Path(final)
    old = final.with_name(final.name + ".old")
    if not final.exists() and old.is_dir():
        log.warning("%s is missing but %s is complete (a swap was interrupted): restoring it", final, old.name)
        old.rename(final)
        _fsync_path(final.parent)
    elif final.exists() and old.exists():
        shutil.rmtree(old, ignore_errors=True)  # the swap finished; only the cleanup was cut short
    shutil.rmtree(final.with_name(final.name + ".tmp"), ignore_errors=True)  # a half-written new version


def write_atomically(final: Path, write: Callable[[Path], None]) -> Path:
    """`write(tmp_dir)` then swap tmp_dir in as `final` (see the module docstring); returns `final`."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_swap(final)
    tmp, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
    tmp.mkdir()
    write(tmp)
    _fsync_tree(tmp)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    _fsync_path(final.parent)
    shutil.rmtree(old, ignore_errors=True)
    return final


def save_best(directory: Path, model) -> Path:
    """The best model so far as `<directory>/best` (`save_pretrained`), swapped in atomically."""
    return write_atomically(Path(directory) / "best", model.save_pretrained)


def save_checkpoint(directory: Path, model: torch.nn.Module, optimizer, scheduler, state: TrainerState) -> Path:
    return write_atomically(
        Path(directory) / "last", lambda tmp: _write_checkpoint(tmp, model, optimizer, scheduler, state)
    )


def _write_checkpoint(tmp: Path, model: torch.nn.Module, optimizer, scheduler, state: TrainerState) -> None:
    # Tied or shared tensors would make safetensors refuse; clone to contiguous, independent tensors.
    weights = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"))
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(),
            "trainer": {
                "config_hash": state.config_hash,
                "epoch": state.epoch,
                "best_metric": state.best_metric,
                "best_epoch": state.best_epoch,
                "epochs_without_improvement": state.epochs_without_improvement,
                "history": state.history,
                "train_seconds": state.train_seconds,
            },
        },
        tmp / "trainer_state.pt",
    )


def load_checkpoint(directory: Path, model: torch.nn.Module, optimizer, scheduler) -> TrainerState:
    last = Path(directory) / "last"
    recover_swap(last)
    if not (last / "trainer_state.pt").is_file():
        raise FileNotFoundError(
            f"{last}: no checkpoint to resume from (expected model.safetensors and trainer_state.pt)"
        )
    model.load_state_dict(load_file(str(last / "model.safetensors"), device="cpu"))
    payload = torch.load(last / "trainer_state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    _set_rng_state(payload["rng"])
    return TrainerState(**payload["trainer"])


def has_checkpoint(directory: Path) -> bool:
    recover_swap(Path(directory) / "last")
    return (Path(directory) / "last" / "trainer_state.pt").is_file()


def checkpoint_config_hash(directory: Path) -> str | None:
    """The config hash the last checkpoint was written for (None: no checkpoint), without loading any weights."""
    if not has_checkpoint(directory):
        return None
    payload = torch.load(Path(directory) / "last" / "trainer_state.pt", map_location="cpu", weights_only=True)
    return payload["trainer"]["config_hash"]
