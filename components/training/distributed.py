"""Distributed data parallel under `torchrun --nproc_per_node=N`: NCCL on GPUs, gloo on CPU.

Outside torchrun (no RANK/WORLD_SIZE in the environment) everything here is a no-op and rank 0 is the only rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """This process's place in the (possibly one-process) DDP group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> Ranks:
    """Join the process group that torchrun describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Ranks()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return Ranks(rank=rank, world_size=world_size, local_rank=local_rank)


def resolve_device(requested: str, ctx_local_rank: int = 0) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError(
                "train.device is 'cuda' but torch sees no CUDA device (this torch build may be CPU-only)"
            )
        return torch.device("cuda", ctx_local_rank)
    return torch.device("cpu")


def barrier(ranks: Ranks) -> None:
    if ranks.enabled:
        dist.barrier()


def _device_for(ranks: Ranks) -> torch.device:
    # NCCL reduces CUDA tensors only; gloo takes CPU tensors.
    return torch.device("cuda", ranks.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce_mean(value: float, ranks: Ranks) -> float:
    if not ranks.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_device_for(ranks))
    dist.all_reduce(tensor)
    return tensor.item() / ranks.world_size


def broadcast_flag(flag: bool, ranks: Ranks) -> bool:
    """Rank 0's decision (e.g. early stopping) for every rank, so no rank waits alone at the next collective."""
    if not ranks.enabled:
        return flag
    tensor = torch.tensor([int(flag)], device=_device_for(ranks))
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())
