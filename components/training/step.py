"""One training step, the same for the trainer and for every benchmark (components/benchmarks/):

    optimizer = build_optimizer(model, cfg.train)              # AdamW, 2 learning rates (+ fusion, word features)
    scheduler = build_scheduler(optimizer, cfg.train, total)   # linear warmup, then linear decay
    out = forward(model, batch, precision)                     # loss must be finite
    backward(out, grad_accum)                                  # gradients of loss / grad_accum
    optimizer_step(model, optimizer, scheduler, grad_clip)     # clip, AdamW, scheduler, zero_grad

`train_step` is the three in a row (one batch, no accumulation); the trainer calls `optimizer_step` once every
`grad_accum` batches, and the step profile times the three phases one by one.
"""

from __future__ import annotations

import torch
from transformers import get_linear_schedule_with_warmup

from components.config import TrainConfig
from components.model.batch import Batch
from components.model.shapca import ShapCA, ShapCAOutput


class NonFiniteLossError(RuntimeError):
    """A batch produced NaN/inf: training stops instead of corrupting the weights."""


def build_optimizer(model: ShapCA, train: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with two learning rates: the pretrained encoders (lr_encoder) and the layers trained from scratch
    (lr_head); `train.lr_fusion` and `train.lr_word_features` give the fusion module and the word features a group of
    their own (in that order, after the two)."""
    groups = model.parameter_groups()
    own_rates = [(model.fusion, train.lr_fusion), (model.word_features, train.lr_word_features)]
    scratch, own_groups = groups["other"], []
    for module, lr in own_rates:
        if module is None or lr is None:
            continue
        ids = {id(p) for p in module.parameters()}
        own_groups.append({"params": [p for p in scratch if id(p) in ids], "lr": lr})
        scratch = [p for p in scratch if id(p) not in ids]
    param_groups = [
        {"params": groups["encoder"], "lr": train.lr_encoder},
        {"params": scratch, "lr": train.lr_head},
        *own_groups,
    ]
    return torch.optim.AdamW(param_groups, weight_decay=train.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig, total_steps: int):
    """Linear warmup over `warmup_ratio` of `total_steps` optimizer steps, then linear decay to 0."""
    total_steps = max(1, total_steps)
    return get_linear_schedule_with_warmup(optimizer, int(train.warmup_ratio * total_steps), total_steps)


def autocast(device: torch.device, precision: str):
    """bf16 autocast for precision "bf16", or "auto" on CUDA; fp32 (disabled) otherwise."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16)


def forward(model: torch.nn.Module, batch: Batch, precision: str = "auto", where: str = "") -> ShapCAOutput:
    """The batch (already on the model's device) through `model` (a ShapCA, or it wrapped by DDP/compile); raises
    NonFiniteLossError, prefixed with `where` ("epoch 1, step 3"), when the loss is NaN or inf."""
    with autocast(batch.input_ids.device, precision):
        out = model(batch)
    if not torch.isfinite(out.loss):
        raise NonFiniteLossError(
            f"{where + ': ' if where else ''}loss is {out.loss.item()} (task {out.task_loss.item()}, "
            f"alignment {float(out.align_loss.detach())}); examples {batch.example_ids[:5]}... "
            "Stopping rather than training on it: lower the learning rates or check these inputs."
        )
    return out


def backward(out: ShapCAOutput, grad_accum: int = 1) -> None:
    """Accumulate the gradients of this batch's share of the step's loss."""
    (out.loss / grad_accum).backward()


def optimizer_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, grad_clip: float) -> None:
    """Clip the gradient norm, step AdamW and the scheduler, clear the gradients."""
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def train_step(
    model: ShapCA, batch: Batch, optimizer: torch.optim.Optimizer, scheduler, train: TrainConfig
) -> ShapCAOutput:
    """One whole step on one batch: forward, backward, optimizer step."""
    out = forward(model, batch, train.precision)
    backward(out)
    optimizer_step(model, optimizer, scheduler, train.grad_clip)
    return out
