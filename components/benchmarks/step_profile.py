"""Where the time of one training step goes: a per-phase breakdown of a Shap-CA step on CPU.

One step is what the trainer does per batch, the same functions (components/training/step.py): forward, backward,
gradient clipping, AdamW, learning-rate scheduler, zero_grad. Phases, timed with `time.perf_counter` (CPU work is
synchronous):

    text_encoder      forward of the text encoder on the tweet tokens (concat mode: tweet [SEP] context)
    context_encoder   forward of the encoder on the context tokens (the shared text encoder's second call unless
                      model.context_encoder names a separate one); absent in none/concat modes
    alignment         Shapley + contrastive: projections, both Shapley games, InfoNCE (ContrastiveAlignment.forward)
    fusion            gated cross-attention of text tokens to context tokens (AdaptiveFusion.forward)
    head              task head and its loss (CRF for NER)
    forward_other     the rest of ShapCA.forward: mean pooling, loss sums (forward total minus the phases above)
    backward          loss.backward() over the whole graph
    optimizer         clip_grad_norm_ + AdamW step + scheduler step + zero_grad

The sub-module phases come from forward pre/post hooks on the model's own sub-modules (the model code is not touched);
the hooks also count calls, so a phase that ran other than once per step shows up in `calls`. Collation (tokenizing
the batch) happens outside the step, in the data loader, and is timed separately as `collate`.

Each phase is reported as the median, min and max over `repeats` steps after `warmup` untimed steps, all on the same
batch; `share` is a phase's median over the median step. A cached context encoder (model.context_trainable_layers)
fills its cache in the warmup steps, so its timed steps are those of the second epoch on.

`run_step_variants` profiles several override sets one after the other in one process (the same machine state) and
reports each one's median step over the first one's: `ratio_to_baseline`.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from components.config import ExperimentConfig, TrainConfig
from components.data.example_dataset import ExampleDataset
from components.machine import machine_description, torch_description
from components.model.shapca import ShapCA
from components.training.data import load_training_data
from components.training.step import backward, build_optimizer, build_scheduler, forward, optimizer_step
from components.training.trainer import seed_everything

FORWARD_PHASES = ("text_encoder", "context_encoder", "alignment", "fusion", "head")
PHASES = (*FORWARD_PHASES, "forward_other", "backward", "optimizer")


@dataclass
class PhaseStats:
    median_ms: float
    min_ms: float
    max_ms: float
    share: float  # median / median step time
    calls_per_step: float


@dataclass
class StepProfile:
    phases: dict[str, PhaseStats]  # in PHASES order; phases that did not run are absent
    step: PhaseStats  # the whole step
    collate: PhaseStats  # tokenizing the batch (outside the step)
    repeats: int
    warmup: int
    batch_size: int
    text_tokens: int  # padded length of the text sequences in the batch
    context_tokens: int | None
    config: dict[str, str] = field(default_factory=dict)  # the model/train settings the step ran with
    batch_source: str = ""
    machine: str = ""
    torch: str = ""  # version and CPU threads the step ran with

    def as_dict(self) -> dict:
        return asdict(self)


class _PhaseTimer:
    """Forward hooks that add each sub-module call's duration to its phase (per step)."""

    def __init__(self) -> None:
        self.elapsed: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._open: dict[int, tuple[str, float]] = {}
        self._handles: list = []

    def attach(self, module: nn.Module, phase_of) -> None:
        """`phase_of(args, kwargs) -> phase name` decides the phase of each call (a shared encoder serves two)."""
        key = id(module)

        def before(_module, args, kwargs):
            self._open[key] = (phase_of(args, kwargs), time.perf_counter())

        def after(_module, _args, _kwargs, _output):
            phase, started = self._open.pop(key)
            self.elapsed[phase] += time.perf_counter() - started
            self.calls[phase] += 1

        self._handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
        self._handles.append(module.register_forward_hook(after, with_kwargs=True))

    def reset(self) -> None:
        self.elapsed.clear()
        self.calls.clear()

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def _stats(values_ms: Sequence[float], step_median_ms: float, calls: float) -> PhaseStats:
    median = statistics.median(values_ms)
    return PhaseStats(
        round(median, 3),
        round(min(values_ms), 3),
        round(max(values_ms), 3),
        round(median / step_median_ms, 4) if step_median_ms else 0.0,
        calls,
    )


def _attach_hooks(model, batch) -> _PhaseTimer:
    timer = _PhaseTimer()
    context_ids = batch.context_input_ids

    def text_or_context(args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        return "context_encoder" if context_ids is not None and ids is context_ids else "text_encoder"

    timer.attach(model.text_encoder, text_or_context)
    if model.context_encoder is not None:
        timer.attach(model.context_encoder, lambda a, k: "context_encoder")
    for phase, module in (("alignment", model.alignment), ("fusion", model.fusion), ("head", model.head)):
        if module is not None:
            timer.attach(module, lambda a, k, phase=phase: phase)
    return timer


def profile_step(
    model,
    examples: list,
    contexts: dict[str, str] | None,
    *,
    images=None,  # an image folder or {image_id: image}, when the model reads images
    train: TrainConfig | None = None,
    repeats: int = 10,
    warmup: int = 2,
) -> StepProfile:
    """Time `warmup + repeats` training steps of `model` on one batch made of `examples` (CPU), with the optimizer,
    scheduler, gradient clipping and precision of `train` (the defaults when None)."""
    train = train or TrainConfig()
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    dataset = ExampleDataset(examples, contexts, images)
    collate_ms = []
    for _ in range(max(3, repeats // 2)):
        started = time.perf_counter()
        batch = model.processor(dataset)
        collate_ms.append((time.perf_counter() - started) * 1e3)

    model.train()
    optimizer = build_optimizer(model, train)  # the trainer's two learning rates
    scheduler = build_scheduler(optimizer, train, warmup + repeats + 1)
    timer = _attach_hooks(model, batch)
    per_phase: dict[str, list[float]] = defaultdict(list)
    calls: dict[str, int] = defaultdict(int)
    step_ms: list[float] = []
    try:
        for index in range(warmup + repeats):
            timer.reset()
            t0 = time.perf_counter()
            out = forward(model, batch, train.precision)
            t1 = time.perf_counter()
            backward(out)
            t2 = time.perf_counter()
            optimizer_step(model, optimizer, scheduler, train.grad_clip)
            t3 = time.perf_counter()
            if index < warmup:
                continue
            hooked = sum(timer.elapsed.values())
            for phase, seconds in timer.elapsed.items():
                per_phase[phase].append(seconds * 1e3)
                calls[phase] += timer.calls[phase]
            per_phase["forward_other"].append(max(0.0, (t1 - t0) - hooked) * 1e3)
            per_phase["backward"].append((t2 - t1) * 1e3)
            per_phase["optimizer"].append((t3 - t2) * 1e3)
            step_ms.append((t3 - t0) * 1e3)
    finally:
        timer.detach()

    step_median = statistics.median(step_ms)
    phases = {
        phase: _stats(per_phase[phase], step_median, calls[phase] / repeats if phase in FORWARD_PHASES else 1.0)
        for phase in PHASES
        if per_phase.get(phase)
    }
    return StepProfile(
        phases=phases,
        step=_stats(step_ms, step_median, 1.0),
        collate=_stats(collate_ms, step_median, 1.0),
        repeats=repeats,
        warmup=warmup,
        batch_size=len(examples),
        text_tokens=int(batch.input_ids.shape[1]),
        context_tokens=int(batch.context_input_ids.shape[1]) if batch.context_input_ids is not None else None,
    )


PROFILE_CONFIG_KEYS = (
    "data.dataset",
    "data.context_generator",
    "model.text_encoder",
    "model.context_encoder",
    "model.context_mode",
    "model.alignment",
    "model.estimator",
    "model.context_trainable_layers",
    "model.permutations",
    "model.max_text_tokens",
    "model.max_context_tokens",
    "train.batch_size",
)


def run_step_profile(
    cfg: ExperimentConfig, *, repeats: int = 10, warmup: int = 2, threads: int | None = 2
) -> StepProfile:
    """Profile a training step of the model `cfg` describes, on the first `train.batch_size` training examples of
    `cfg.data.dataset` with their contexts (a real batch, as the trainer would see it)."""
    if threads:
        torch.set_num_threads(threads)
    seed_everything(cfg.train.seed)
    batch_size = cfg.train.batch_size
    data_cfg = cfg.data.model_copy(update={"max_examples": {"train": batch_size, "dev": 1, "test": 1}})
    data = load_training_data(data_cfg)
    examples = data.splits["train"]
    if len(examples) < batch_size:
        raise ValueError(
            f"{cfg.data.dataset} train has {len(examples)} examples, fewer than train.batch_size={batch_size}"
        )
    model = ShapCA.from_config(cfg.model, task=data.task, labels=data.labels)
    profile = profile_step(
        model, examples, data.context_texts, images=data.images, train=cfg.train, repeats=repeats, warmup=warmup
    )
    flat = cfg.flat()
    profile.config = {k: str(flat[k]) for k in PROFILE_CONFIG_KEYS if k in flat}
    source = f"{cfg.data.dataset} train, first {batch_size}"
    profile.batch_source = source + (f" + {data.contexts.generator} contexts" if data.contexts is not None else "")
    profile.machine = machine_description()
    profile.torch = torch_description()
    return profile


def parse_variant(text: str) -> tuple[str, list[str]]:
    """'name:section.field=value,section.field=value' (or 'name:' for none) -> (name, overrides)."""
    name, sep, rest = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"variant {text!r}: expected name:section.field=value,... (name: alone for no overrides)")
    overrides = [o.strip() for o in rest.split(",") if o.strip()]
    if any("=" not in o for o in overrides):
        raise ValueError(f"variant {text!r}: each override is section.field=value")
    return name.strip(), overrides


def run_step_variants(
    configs: dict[str, ExperimentConfig], *, repeats: int = 10, warmup: int = 2, threads: int | None = 2
) -> dict:
    """Profile each named config in turn; the first is the baseline of `ratio_to_baseline` (median step over its
    median step)."""
    if not configs:
        raise ValueError("no variants to profile")
    profiles = {
        name: run_step_profile(cfg, repeats=repeats, warmup=warmup, threads=threads) for name, cfg in configs.items()
    }
    baseline = next(iter(profiles))
    medians = {name: p.step.median_ms for name, p in profiles.items()}
    return {
        "kind": "step_variants",
        "baseline": baseline,
        "step_median_ms": medians,
        "ratio_to_baseline": {name: round(ms / medians[baseline], 3) for name, ms in medians.items()},
        "variants": {name: p.as_dict() for name, p in profiles.items()},
        "machine": profiles[baseline].machine,
    }
