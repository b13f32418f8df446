"""Per-epoch checkpoints that an interrupted run resumes from without losing or repeating an epoch.

`<output_dir>/checkpoints/last/` holds
  - `model.safetensors`: the weights (safetensors: no code runs on load),
  - `trainer_state.pt`: optimizer, scheduler, RNG states, epoch and history, read back with `weights_only=True`.
A checkpoint is written to a temporary sibling and swapped in with renames, so a kill mid-write leaves the previous
checkpoint intact. The best model so far (by dev metric) is saved separately with `save_pretrained` under `best/`.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


@dataclass
class TrainerState:
    config_hash: str = ""  # what the checkpoint trains (components.config.config_hash): a resume must match it
    epoch: int = 0  # epochs completed
    best_metric: float = float("-inf")
    best_epoch: int = 0
    epochs_without_improvement: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


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


def _swap_in(tmp: Path, final: Path) -> None:
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer, scheduler, state: TrainerState
) -> Path:
    final = Path(directory) / "last"
    tmp = final.with_name("last.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
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
            },
        },
        tmp / "trainer_state.pt",
    )
    _swap_in(tmp, final)
    return final


def load_checkpoint(directory: Path, model: torch.nn.Module, optimizer, scheduler) -> TrainerState:
    last = Path(directory) / "last"
    if not (last / "trainer_state.pt").is_file():
        raise FileNotFoundError(f"{last}: no checkpoint to resume from (expected model.safetensors and trainer_state.pt)")
    model.load_state_dict(load_file(str(last / "model.safetensors"), device="cpu"))
    payload = torch.load(last / "trainer_state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    _set_rng_state(payload["rng"])
    return TrainerState(**payload["trainer"])


def has_checkpoint(directory: Path) -> bool:
    return (Path(directory) / "last" / "trainer_state.pt").is_file()
