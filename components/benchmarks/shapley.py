"""Benchmark of the Shapley estimator: speed against a per-permutation Python loop, accuracy against the exact values,
the token coverage game's closed form against enumeration, and the share of a real training step that the alignment
takes.

Rows (one per N, K), on players and targets drawn i.i.d. standard normal in d dimensions (seeded):
    vectorized_ms  forward+backward time of `monte_carlo_shapley` (K orders + their reverses), best run
    loop_ms        forward+backward time of `loop_shapley` on the same 2K orders, best run: walk each order, add
                   one player to a running sum, score the sum against every target, credit the difference to it
    speedup        loop_ms / vectorized_ms
    rel_error      ||phi_MC - phi_exact||_2 / ||phi_exact||_2 averaged over seeds; None where N > exact_limit
Timing is best-of-runs (as timeit does), taken in `loop_repeats` sweeps over the whole grid (`repeats` runs of the
vectorised estimator and one of the loop per cell and sweep), so that a burst of other work on a shared machine lands
on some samples of a cell, not on all of them.
Coverage rows (one per N, T): the token coverage game of one batch, N targets x N players x T tokens, scores drawn
i.i.d. standard normal (seeded):
    closed_form_ms   forward+backward time of `coverage_shapley` on scores (N, N, T), best run
    brute_force_ms   forward+backward time of the same values by enumeration: `exact_shapley` over the 2^N coalitions
                     of `coverage_value`, one target at a time; None where N > coverage_exact_limit
    speedup          brute_force_ms / closed_form_ms
    max_abs_diff     max |closed form - enumeration| (float32)
alignment_share_of_step: time of the alignment (projections, both Shapley games, InfoNCE; forward+backward) divided by
the time of a whole training step (components/training/step.py: forward, backward, clipping, AdamW, scheduler) of
the paper's Shap-CA on MiniLM (`PAPER_MODEL`: the cosine-of-sum game, the context encoder trained whole) on one
batch.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from components.config import DataConfig, TrainConfig
from components.data.example_dataset import ExampleDataset
from components.datasets import get_spec
from components.machine import machine_description, torch_description
from components.model.alignment import cosine_of_sum
from components.model.shapca import ShapCA
from components.model.shapca_config import ShapCAConfig
from components.model.shapley import coverage_shapley, exact_shapley, monte_carlo_shapley, random_orders
from components.tasks import get_task
from components.training.data import load_training_data
from components.training.step import build_optimizer, build_scheduler, train_step


def loop_shapley(players: Tensor, targets: Tensor, orders: Tensor) -> Tensor:
    """The straightforward implementation the vectorised estimator replaces: Python loops over orders and positions."""
    unit_targets = F.normalize(targets, dim=-1)  # (M, d), once
    contributions: list[list[Tensor]] = [[] for _ in range(players.shape[0])]
    for order in orders.tolist():
        running: Tensor | None = None
        previous: Tensor | float = 0.0
        for i in order:
            running = players[i] if running is None else running + players[i]  # (d,)
            value = F.normalize(running, dim=-1) @ unit_targets.T  # (M,) cosine of the sum with every target
            contributions[i].append(value - previous)
            previous = value
    return torch.stack([torch.stack(c).mean(dim=0) for c in contributions])  # (N, M)


def coverage_value(members: Tensor, scores: Tensor, targets: Tensor) -> Tensor:
    """One target's token coverage game as a value function for `exact_shapley` / `monte_carlo_shapley`, a reference
    that scores every coalition from scratch: members (..., N) 0/1, scores (N, T) the covers a_k(t) (the "players"),
    targets (1, T) only for its shape -> (..., 1) mean_t max_{k in S} a_k(t), and 0 for the empty coalition."""
    inside = members.bool()[..., None]  # (..., N, 1)
    best = torch.where(inside, scores, -math.inf).amax(dim=-2)  # (..., T); -inf for the empty coalition
    return torch.where(inside.any(dim=-2), best, 0.0).mean(dim=-1, keepdim=True)  # (..., 1)


def _time_ms(fn: Callable[[], None]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1e3


@dataclass
class _Case:
    """One (N, K) cell: both implementations set up on the same inputs and orders, and their timings so far."""

    n: int
    k: int
    fast: Callable[[], None]
    slow: Callable[[], None]
    fast_ms: list[float] = field(default_factory=list)
    loop_ms: list[float] = field(default_factory=list)


def _case(n: int, k: int, dim: int) -> _Case:
    g = torch.Generator().manual_seed(1000 * n + k)
    players = torch.randn(n, dim, generator=g).requires_grad_()
    targets = torch.randn(n, dim, generator=g).requires_grad_()
    weight = torch.randn(n, n, generator=g)  # a generic downstream use of phi, so every entry gets a gradient
    orders = random_orders(k, n, g)  # the same 2K orders for both implementations

    def forward_backward(estimate: Callable[[Tensor, Tensor], Tensor]) -> Callable[[], None]:
        def run() -> None:
            players.grad = targets.grad = None
            (estimate(players, targets) * weight).sum().backward()

        return run

    fast = forward_backward(lambda x, y: monte_carlo_shapley(x, y, cosine_of_sum, k, generator=g))
    slow = forward_backward(lambda x, y: loop_shapley(x, y, orders))
    return _Case(n, k, fast, slow)


def _rel_error(n: int, k: int, dim: int, seeds: Sequence[int]) -> float:
    errors = []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        x, y = torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g)
        exact = exact_shapley(x.double(), y.double(), cosine_of_sum)
        estimate = monte_carlo_shapley(x, y, cosine_of_sum, k, generator=g).double()
        errors.append(float((estimate - exact).norm() / exact.norm()))
    return sum(errors) / len(errors)


def _coverage_row(n: int, t: int, repeats: int, loop_repeats: int, exact_limit: int) -> dict:
    """Time the closed form against enumeration on one batch's game: N targets x N players x T tokens."""
    scores = torch.randn(n, n, t, generator=torch.Generator().manual_seed(100 * n + t)).requires_grad_()
    weight = torch.randn(n, n, generator=torch.Generator().manual_seed(n))  # a generic downstream use of phi

    def closed_form() -> Tensor:
        return coverage_shapley(scores)  # (N targets, N players)

    def brute_force() -> Tensor:
        return torch.stack([exact_shapley(one, one[:1], coverage_value)[:, 0] for one in scores])

    def timed(estimate: Callable[[], Tensor]) -> Callable[[], None]:
        def run() -> None:
            scores.grad = None
            (estimate() * weight).sum().backward()

        return run

    timed(closed_form)()  # warm-up
    row: dict[str, Any] = {
        "n": n,
        "t": t,
        "closed_form_ms": round(min(_time_ms(timed(closed_form)) for _ in range(repeats)), 4),
        "brute_force_ms": None,
        "speedup": None,
        "max_abs_diff": None,
    }
    if n <= exact_limit:
        brute_ms = min(_time_ms(timed(brute_force)) for _ in range(loop_repeats))
        with torch.no_grad():
            diff = float((closed_form() - brute_force()).abs().max())
        row |= {
            "brute_force_ms": round(brute_ms, 2),
            "speedup": round(brute_ms / row["closed_form_ms"], 1),
            "max_abs_diff": diff,
        }
    return row


def _step_batch(model, data_dir: Path | None, batch_size: int):
    """A real twitter2017 batch with its BLIP-2 contexts, loaded as a run loads them, when the data is there;
    synthetic tweets otherwise."""
    if data_dir is not None and (Path(data_dir) / get_spec("twitter2017").files["train"]).is_file():
        data = load_training_data(
            DataConfig(
                dataset="twitter2017",
                data_dir=Path(data_dir),
                context_generator="blip2",
                max_examples={"train": batch_size, "dev": 1, "test": 1},
            )
        )
        return model.processor(data.example_dataset(data.splits["train"])), "twitter2017 train + blip2 contexts"
    words = "the new album from the band is out today and fans across the city line up to buy it".split()
    task = get_task(model.task)  # unlabelled records of the model's task, as a serving row makes them
    examples = [
        task.serving_record(f"synthetic-{i}", (words * 2)[i % 5 : i % 5 + 24], {}, model.labels)
        for i in range(batch_size)
    ]
    contexts = {ex.image_id: "a group of people standing in front of a building with a sign" for ex in examples}
    return model.processor(ExampleDataset(examples, contexts)), "synthetic 24-word tweets + 13-word contexts"


# The model whose step is timed: the paper's Shap-CA on MiniLM (the cosine-of-sum Shapley game by Monte Carlo, the
# context encoder trained whole), not the default recipe (plain InfoNCE), whose alignment plays no Shapley game.
PAPER_MODEL = dict(alignment="shapley", shapley_game="cosine_of_sum", context_trainable_layers=None)


def alignment_share_of_step(data_dir: Path | None = Path("data"), batch_size: int = 32, repeats: int = 3) -> dict:
    """Time one MiniLM training step of the paper's Shap-CA (PAPER_MODEL; the trainer's step:
    components/training/step.py) and the alignment's part of it, on CPU."""
    spec = get_spec("twitter2017")
    model = ShapCA.from_config(ShapCAConfig(**PAPER_MODEL), spec.task, spec.labels).train()
    batch, source = _step_batch(model, data_dir, batch_size)
    train = TrainConfig()
    optimizer = build_optimizer(model, train)
    scheduler = build_scheduler(optimizer, train, repeats + 1)

    def step() -> None:
        train_step(model, batch, optimizer, scheduler, train)

    step()  # warm-up
    step_ms = min(_time_ms(step) for _ in range(repeats))
    with torch.no_grad():  # the pooled vectors the alignment sees in that step
        encoded = model.encode(batch)
    alignment = model.alignment
    if alignment is None or encoded.context is None:
        raise ValueError("the timed model must align contexts (PAPER_MODEL) and the batch must have contexts")
    text, context = encoded.text.detach().requires_grad_(), encoded.context.detach().requires_grad_()

    def align() -> None:
        out = alignment(text, context, batch.has_context)
        (model.config.lambda_ct * out.loss_ct + model.config.lambda_ci * out.loss_ci).backward()

    align()  # warm-up
    align_ms = min(_time_ms(align) for _ in range(10 * repeats))
    return {"step_ms": step_ms, "align_ms": align_ms, "share": align_ms / step_ms, "batch": source}


def run_shapley_benchmark(
    ns: Sequence[int] = (8, 12, 16, 32, 64),
    ks: Sequence[int] = (16, 64, 256),
    dim: int = 384,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    repeats: int = 10,
    loop_repeats: int = 3,
    exact_limit: int = 12,
    data_dir: Path | None = Path("data"),
    threads: int = 2,
    include_step: bool = True,
    progress: bool = True,
    coverage_ns: Sequence[int] = (8, 10, 32, 64),
    coverage_ts: Sequence[int] = (32, 96),
    coverage_exact_limit: int = 10,
) -> dict:
    """{"rows": [...], "coverage_rows": [...], "alignment_share_of_step": float | None, "machine": str}; see the
    module docstring."""
    from tqdm import tqdm

    torch.set_num_threads(threads)
    cases = [_case(n, k, dim) for n in ns for k in ks]
    for case in cases:
        case.fast()  # warm-up: first-call allocations are not the estimator's cost
    # Sweeps over the whole grid, so that each cell's samples are spread over the run, not bunched in one moment.
    with tqdm(total=loop_repeats * len(cases), desc="shapley benchmark", disable=not progress) as bar:
        for _ in range(loop_repeats):
            for case in cases:
                case.fast_ms += [_time_ms(case.fast) for _ in range(repeats)]
                case.loop_ms.append(_time_ms(case.slow))
                bar.update()
    rows = []
    for case in cases:
        fast_ms, loop_ms = min(case.fast_ms), min(case.loop_ms)
        rel_error = _rel_error(case.n, case.k, dim, seeds) if case.n <= exact_limit else None
        rows.append(
            {
                "n": case.n,
                "k": case.k,
                "vectorized_ms": round(fast_ms, 4),
                "loop_ms": round(loop_ms, 2),
                "speedup": round(loop_ms / fast_ms, 1),
                "rel_error": None if rel_error is None else round(rel_error, 5),
            }
        )
    coverage_rows = [
        _coverage_row(n, t, repeats, loop_repeats, coverage_exact_limit) for n in coverage_ns for t in coverage_ts
    ]
    share = None
    if include_step:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            step = alignment_share_of_step(data_dir)
        share = round(step["share"], 5)
        if progress:
            print(json.dumps({"training_step": step}), flush=True, file=sys.stderr)
    machine = f"{machine_description()}, {torch_description()}"
    return {"rows": rows, "coverage_rows": coverage_rows, "alignment_share_of_step": share, "machine": machine}
