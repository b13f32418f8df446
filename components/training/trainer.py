"""The training loop, top to bottom: data -> model -> optimizer -> epochs (train, dev, checkpoint) -> best model
-> test.

A batch's path: `load_training_data` (readers) -> `BucketBatchSampler` picks indices of the (example, context,
image) dataset -> `model.processor` tokenizes them into a `Batch` (the task's labels included) -> `ShapCA.forward`
returns task loss + alignment loss.

Model selection and early stopping use the dev split only; the test split is scored once, with the best model, at
the end. Every epoch ends in a checkpoint, and `resume=True` continues from the last one; on CPU a resumed run ends
with the same metrics as an uninterrupted one (data order is seeded per epoch, RNG states are checkpointed).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from components.config import ExperimentConfig, config_hash
from components.data.metrics import SELECTION_METRIC
from components.model.shapca import ShapCA
from components.training.checkpoint import (
    TrainerState,
    has_checkpoint,
    load_checkpoint,
    save_best,
    save_checkpoint,
)
from components.training.data import TrainingData
from components.training.distributed import all_reduce_mean, barrier, broadcast_flag, init_distributed, resolve_device
from components.training.evaluate import Evaluation, evaluate_split
from components.training.sampler import BucketBatchSampler
from components.training.step import backward, build_optimizer, build_scheduler, forward, optimizer_step

log = logging.getLogger(__name__)

# Called on the main rank after each epoch's checkpoint: (epoch, metrics) -> None. MLflow logging plugs in here.
EpochCallback = Callable[[int, dict[str, float]], None]
# Called on the main rank every few optimizer steps (see step_log_interval): (global step, {"train_step_loss": mean
# batch loss since the last call, "train_step_lr_encoder": the encoder's learning rate}). The loss curve plugs in here.
StepCallback = Callable[[int, dict[str, float]], None]
STEP_LOG_EVERY = 10  # optimizer steps between two points of the loss curve (Twitter-2017, batch 32: 106 per epoch)


def step_log_interval(steps_per_epoch: int) -> int:
    """STEP_LOG_EVERY, or a quarter epoch when epochs are shorter, so that a small run still draws a curve."""
    return max(1, min(STEP_LOG_EVERY, steps_per_epoch // 4))


@dataclass
class FitResult:
    model: ShapCA  # the best model (by dev metric), on CPU
    best_epoch: int
    best_dev: dict[str, float]
    test: Evaluation | None  # None on ranks other than 0
    history: list[dict[str, float]]
    stopped_early: bool
    checkpoint_dir: Path
    train_seconds: float
    world_size: int = 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _text_length(example) -> int:
    return len(example.tokens)


def _make_loader(dataset, processor, sampler, num_workers: int = 0) -> DataLoader:
    """``num_workers`` > 0 tokenizes (and decodes images) in worker processes, overlapping the model's step; they
    hand batches over through shared memory (/dev/shm). 0 collates in the training process (why 0 is the default:
    docs/PERFORMANCE.md, "Data loader workers")."""
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=processor,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def fit(
    cfg: ExperimentConfig,
    data: TrainingData,
    *,
    resume: bool = False,
    on_epoch_end: EpochCallback | None = None,
    on_step: StepCallback | None = None,
) -> FitResult:
    tc = cfg.train
    seed_everything(tc.seed)
    ranks = init_distributed(resolve_device(tc.device))
    device = resolve_device(tc.device, ranks.local_rank)
    started = time.perf_counter()

    # Model: built from the typed config.
    model = ShapCA.from_config(cfg.model, task=data.task, labels=data.labels)
    model.to(device)

    # Data: length-bucketed, seeded per epoch, sharded across DDP ranks.
    train_examples = data.splits["train"]
    sampler = BucketBatchSampler(
        [_text_length(e) for e in train_examples],
        tc.batch_size,
        shuffle=True,
        seed=tc.seed,
        rank=ranks.rank,
        world_size=ranks.world_size,
    )
    loader = _make_loader(data.example_dataset(train_examples), model.processor, sampler, tc.num_workers)

    # Optimizer: two learning rates (pretrained encoders vs. new layers); linear warmup then linear decay.
    optimizer = build_optimizer(model, tc)
    steps_per_epoch = math.ceil(len(sampler) / tc.grad_accum)
    scheduler = build_scheduler(optimizer, tc, steps_per_epoch * tc.epochs)
    log_every = step_log_interval(steps_per_epoch)

    checkpoint_dir = Path(tc.output_dir) / "checkpoints"
    state = TrainerState(config_hash=config_hash(cfg))
    if resume and has_checkpoint(checkpoint_dir):
        state = load_checkpoint(checkpoint_dir, model, optimizer, scheduler)
        if state.config_hash != config_hash(cfg):
            raise ValueError(
                f"{checkpoint_dir / 'last'} was written by another config (hash {state.config_hash}, this run "
                f"{config_hash(cfg)}): resuming would mix two trainings; use a fresh train.output_dir"
            )
        log.info("resumed from %s after epoch %d", checkpoint_dir / "last", state.epoch)
    elif resume:
        log.warning("resume requested but %s holds no checkpoint: starting from scratch", checkpoint_dir)
    earlier_seconds = state.train_seconds  # the parts before this one (0 for a fresh run)

    train_model: Any = model  # the model, wrapped by DDP and compiled as asked: what the step calls
    if ranks.enabled:
        train_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    if tc.compile:
        train_model = torch.compile(train_model)

    stopped_early = False
    window_loss, window_batches = 0.0, 0  # the loss curve: mean batch loss since the last logged step
    for epoch in range(state.epoch + 1, tc.epochs + 1):
        sampler.set_epoch(epoch)
        train_model.train()
        totals = {"loss": 0.0, "task_loss": 0.0, "align_loss": 0.0}
        n_batches, n_samples, epoch_start = 0, 0, time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {epoch}/{tc.epochs}", disable=not ranks.is_main, leave=False)
        optimizer.zero_grad(set_to_none=True)
        for step, batch in enumerate(bar, start=1):
            batch = batch.to(device)
            out = forward(train_model, batch, tc.precision, where=f"epoch {epoch}, step {step}")
            backward(out, tc.grad_accum)
            window_loss += out.loss.item()
            window_batches += 1
            if step % tc.grad_accum == 0 or step == len(loader):
                optimizer_step(model, optimizer, scheduler, tc.grad_clip)
                global_step = (epoch - 1) * steps_per_epoch + math.ceil(step / tc.grad_accum)
                if on_step is not None and ranks.is_main and global_step % log_every == 0:
                    on_step(
                        global_step,
                        {
                            "train_step_loss": window_loss / window_batches,
                            "train_step_lr_encoder": scheduler.get_last_lr()[0],
                        },
                    )
                    window_loss, window_batches = 0.0, 0
            totals["loss"] += out.loss.item()
            totals["task_loss"] += out.task_loss.item()
            totals["align_loss"] += float(out.align_loss.detach())
            n_batches += 1
            n_samples += len(batch)
            samples_per_s = n_samples / (time.perf_counter() - epoch_start)
            bar.set_postfix(loss=f"{totals['loss'] / n_batches:.4f}", sps=f"{samples_per_s:.1f}")

        metrics = {f"train_{k}": all_reduce_mean(v / max(1, n_batches), ranks) for k, v in totals.items()}
        metrics["train_samples_per_s"] = n_samples / (time.perf_counter() - epoch_start)
        metrics["train_samples"] = float(n_samples)  # this rank's share of the epoch (the split / world size under DDP)

        # Dev scoring on the main rank only (the splits are small); other ranks wait at the barrier.
        dev = evaluate_split(model, data, "dev", tc.batch_size, device).metrics if ranks.is_main else {}
        metrics.update({f"dev_{k}": v for k, v in dev.items()})
        state.epoch = epoch
        state.history.append({"epoch": epoch, **metrics})
        improved = ranks.is_main and dev[SELECTION_METRIC] > state.best_metric
        if ranks.is_main:
            if improved:
                state.best_metric, state.best_epoch, state.epochs_without_improvement = dev[SELECTION_METRIC], epoch, 0
                save_best(checkpoint_dir, model)
            else:
                state.epochs_without_improvement += 1
            state.train_seconds = earlier_seconds + time.perf_counter() - started
            save_checkpoint(checkpoint_dir, model, optimizer, scheduler, state)
            log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in metrics.items()})
            if on_epoch_end is not None:
                on_epoch_end(epoch, metrics)
        barrier(ranks)
        if broadcast_flag(state.epochs_without_improvement >= tc.patience, ranks):
            stopped_early = True
            break

    train_seconds = earlier_seconds + time.perf_counter() - started  # every part of a resumed run
    # The test split is scored once, with the best dev model.
    best = ShapCA.from_pretrained(checkpoint_dir / "best") if ranks.is_main else model.cpu()
    test = evaluate_split(best.to(device), data, "test", tc.batch_size, device) if ranks.is_main else None
    best_dev = next((h for h in state.history if h["epoch"] == state.best_epoch), {})
    return FitResult(
        model=best.cpu(),
        best_epoch=state.best_epoch,
        best_dev={k.removeprefix("dev_"): v for k, v in best_dev.items() if k.startswith("dev_")},
        test=test,
        history=state.history,
        stopped_early=stopped_early,
        checkpoint_dir=checkpoint_dir,
        train_seconds=train_seconds,
        world_size=ranks.world_size,
    )
