"""Typed experiment configuration, loaded from YAML files in `configs/`.

An experiment is a config, not a code edit: `load_config("configs/default.yaml", ["train.epochs=1"])`. The defaults
of these classes are the embedded default recipe: `ExperimentConfig()` is what configs/default.yaml says
(tests/test_config.py checks it), and each constant chosen on data says why where it is defined.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.datasets import DATASETS, DatasetName, GeneratorOrNone, get_spec
from components.model.shapca_config import ShapCAConfig
from components.tasks import get_task


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: DatasetName = "twitter2017"
    data_dir: Path = Path("data")  # materialised by `dvc pull`
    context_generator: GeneratorOrNone = "blip2"
    context_file: Path | None = None  # overrides the generator's file: a context set written by `shapca contexts`
    image_dir: Path | None = None  # `<image_id>.jpg` files, where the user has the images
    # Training fails when a split misses more than this share of its images in image_dir (a wrong path, a partial copy).
    max_missing_image_rate: float = Field(0.05, ge=0.0, le=1.0)
    # Cap on examples per split (first N in file order) for quick runs and tests; None keeps all.
    max_examples: dict[str, int] | None = None


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = 3
    batch_size: int = 32
    grad_accum: int = 1
    # Per parameter group, chosen on Twitter-2017 dev (docs/research/recipe-probe.md): at 5e-5 / 1e-3 MiniLM and the
    # from-scratch layers under-train in 3 epochs (text only 3.5 test F1 lower, the fusion gate stays where it starts).
    lr_encoder: float = 1e-4  # pretrained encoders
    lr_head: float = 5e-3  # everything trained from scratch (projections, fusion, heads, CRF)
    lr_fusion: float | None = None  # the fusion module's own rate (None: lr_head), e.g. to let an open gate stay open
    # The word features' own rate (None: lr_head). Added into the encoder's input embeddings, features trained at
    # lr_head swamp the pretrained word embeddings in the first epoch (docs/RESULTS.md, case features).
    lr_word_features: float | None = None
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_clip: float = 1.0
    patience: int = 2  # epochs without dev improvement before early stopping
    seed: int = 13
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False
    num_gpus: int = 1  # > 1: training runs under torchrun with DDP
    output_dir: Path = Path("outputs")
    # Where every epoch's checkpoint is also published (s3://bucket/prefix, or a directory every host mounts), so that
    # a resumed training on another host continues from it (components/training/checkpoint_store.py). None: local only.
    checkpoint_url: str | None = None
    num_workers: int = 0


class TrackingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experiment: str = "shapca"
    register_model: bool = True  # register the model as `shapca-<dataset>` and decide the champion alias
    log_model: bool = True  # log the pyfunc model (~90 MB with MiniLM); registration needs it
    # A challenger must beat the champion's dev metric by at least this. 0.01 = one dev-F1 point: the seed std of dev
    # F1 in docs/RESULTS.md is 0.09-0.54 points, so two single runs differ by ~0.8 point (sqrt(2) * 0.54) by chance.
    min_delta: float = 0.01
    min_dev_metric: float | None = None  # optional quality floor: a version below it never becomes champion
    # Quick runs and tests: let a version scored on a capped dev split (data.max_examples.dev) be promoted; it is still
    # compared only with a champion scored on the identical split. Off: only full-split evaluations promote.
    allow_partial_dev: bool = False


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: DataConfig = Field(default_factory=DataConfig)
    model: ShapCAConfig = Field(default_factory=ShapCAConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _head_settings_of_the_task(self) -> ExperimentConfig:
        """`model.head` checked against the settings of the dataset's task and written out in full, so that a run's
        params and identity name every head setting, defaults included."""
        task = get_task(get_spec(self.data.dataset).task)
        head = task.head_settings(self.model.head).model_dump()
        if head != self.model.head:
            self.model = self.model.model_copy(update={"head": head})
        return self

    def flat(self) -> dict[str, Any]:
        """`{"train.epochs": 3, ...}`: the form MLflow params take."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = value

        walk("", self.model_dump(mode="json"))
        return out


# Fields that say where things go rather than what is trained: two configs differing only here train the same model.
IDENTITY_EXCLUDED = ("train.output_dir", "train.checkpoint_url", "train.num_workers", "data.data_dir", "tracking.")
SEED_KEY = "train.seed"


def identity_excluded(key: str) -> bool:
    """Whether a flat config key (`train.output_dir`) is left out of a config's identity."""
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in IDENTITY_EXCLUDED)


def config_identity(cfg: ExperimentConfig) -> dict[str, str]:
    """The fields that identify what a run trains, as strings (the form MLflow stores params in)."""
    return {k: str(v) for k, v in sorted(cfg.flat().items()) if not identity_excluded(k)}


def identity_from_params(params: dict[str, str]) -> dict[str, str]:
    """`config_identity` read back from a run's MLflow params: the config fields among them (those of a config of the
    run's dataset, whose task decides the `model.head.*` fields). A run also logs what it measured
    (data.<split>_size, data.<split>_image_coverage, lineage.*), which is not configuration."""
    dataset = params.get("data.dataset")
    fields = set(ExperimentConfig.model_validate({"data": {"dataset": dataset}} if dataset in DATASETS else {}).flat())
    return {k: v for k, v in sorted(params.items()) if k in fields and not identity_excluded(k)}


def identity_hash(identity: dict[str, str], include_seed: bool = True) -> str:
    items = {k: v for k, v in identity.items() if include_seed or k != SEED_KEY}
    return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]


def config_hash(cfg: ExperimentConfig, include_seed: bool = True) -> str:
    """16 hex digits naming what a config trains (see IDENTITY_EXCLUDED): checkpoints and the ablation grid use it."""
    return identity_hash(config_identity(cfg), include_seed)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.field=value` overrides; values are parsed as YAML scalars (`1`, `true`, `1e-4`, `null`)."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r}: expected section.field=value")
        node = raw
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    raw: dict[str, Any] = {}
    if path is not None:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of sections (data, model, train, tracking)")
    return ExperimentConfig.model_validate(apply_overrides(raw, overrides or []))
