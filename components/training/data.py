"""Everything a training run reads: the dataset's splits, its label set, the context set and (optionally) images.

Loaders read, publishers write: `load_training_data` writes nothing (evaluation and benchmarks call it too, and the
context cache may be a shared S3 bucket); a run that trains publishes its context set first (`publish_run_contexts`,
or the train flow's generate-contexts subflow) and hands the published file to the loader.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from components.common.images import DEFAULT_MAX_PIXELS, ImageProblem, decode_image
from components.config import DataConfig
from components.contexts.settings import ContextsConfig
from components.data.example_dataset import ExampleDataset
from components.data.records import ContextSet, Example
from components.datasets import DATASETS, SPLITS, get_spec, labels, load_split

log = logging.getLogger(__name__)


class ImageFolder:
    """Images as `<image_dir>/<image_id>.jpg` (or .png). A missing, unreadable or oversized image (the same
    decompression-bomb guard as context generation) is None: its gate closes."""

    def __init__(self, image_dir: Path):
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"data.image_dir {self.image_dir} is not a directory")
        self.unreadable: dict[str, str] = {}

    def get(self, image_id: str) -> Image.Image | None:
        for suffix in (".jpg", ".jpeg", ".png"):
            path = self.image_dir / f"{image_id}{suffix}"
            if path.is_file():
                try:
                    return decode_image(image_id, path.read_bytes(), DEFAULT_MAX_PIXELS, where=path)
                except (ImageProblem, OSError) as error:
                    reason = error.reason if isinstance(error, ImageProblem) else f"unreadable: {error}"
                    if image_id not in self.unreadable:
                        log.warning("image %s not used: %s", path, reason)
                    self.unreadable[image_id] = reason
                    return None
        return None

    def has(self, image_id: str) -> bool:
        return any((self.image_dir / f"{image_id}{suffix}").is_file() for suffix in (".jpg", ".jpeg", ".png"))


@dataclass
class TrainingData:
    dataset: str
    task: str  # its key in the task registry (components/tasks/)
    labels: list[str]
    splits: dict[str, list[Example]]
    contexts: ContextSet | None
    images: ImageFolder | None

    @property
    def context_texts(self) -> dict[str, str] | None:
        """image_id -> context text; None when the run uses no contexts."""
        return self.contexts.contexts if self.contexts is not None else None

    def example_dataset(self, examples: list[Example]) -> ExampleDataset:
        """(example, context, image) per example, with the run's contexts and (when it reads images) images."""
        return ExampleDataset(examples, self.context_texts, self.images)

    def image_coverage(self) -> dict[str, float]:
        """Per split: the share of examples whose image file is in data.image_dir ({} when the run reads no images)."""
        if self.images is None:
            return {}
        return {
            split: sum(self.images.has(e.image_id) for e in ex) / max(1, len(ex)) for split, ex in self.splits.items()
        }

    def context_coverage(self) -> dict[str, float]:
        if self.contexts is None:
            return {split: 0.0 for split in self.splits}
        return {split: self.contexts.coverage(e.image_id for e in ex) for split, ex in self.splits.items()}


def contexts_config_for(cfg: DataConfig, contexts: ContextsConfig | None = None) -> ContextsConfig | None:
    """How a run's contexts are made: `contexts` (e.g. an hf backend) pinned to the run's dataset and data, else an
    import of the published set `cfg.context_generator` names. None when the run reads a given context file, uses no
    contexts, or has no published set for its images (MNRE: text only unless a set is generated for it)."""
    if cfg.context_file is not None or cfg.context_generator == "none":
        return None
    if contexts is None:
        if not get_spec(cfg.dataset).publishes_contexts(cfg.context_generator):
            return None
        contexts = ContextsConfig(backend="precomputed", generator=cfg.context_generator)
    return contexts.model_copy(update={"dataset": cfg.dataset, "data_dir": cfg.data_dir})


def context_limit(cfg: DataConfig) -> int | None:
    """A capped run (data.max_examples on every split: the first N of each) needs its examples' contexts only."""
    caps = cfg.max_examples or {}
    return max(caps.values()) if set(SPLITS) <= set(caps) else None


def publish_run_contexts(cfg: DataConfig) -> Path | None:
    """The publisher step of a run that trains in one process (`shapca train`): its context set published through
    the context cache (components/contexts/steps.py), as the train flow's generate-contexts subflow does. Returns the
    set's file, which `load_training_data` then reads; None when the run reads a given file or no contexts."""
    contexts_cfg = contexts_config_for(cfg)
    if contexts_cfg is None:
        return None
    from components.contexts.steps import run_contexts

    _, published = run_contexts(contexts_cfg, progress=False, limit_per_split=context_limit(cfg))
    return published.path


def load_context_set(cfg: DataConfig, published: Path | None = None) -> ContextSet | None:
    """The run's contexts, read; nothing is written. From `published` (what `publish_run_contexts` returned), else
    from `data.context_file`, else (evaluation, benchmarks) the same set looked up in the context cache without
    storing or publishing anything. Every route gives the contexts the one route of the README publishes."""
    from components.contexts import read_context_set

    path = published or cfg.context_file
    if path is not None:
        return read_context_set(path)
    contexts_cfg = contexts_config_for(cfg)
    if contexts_cfg is None:
        return None
    from components.contexts.steps import read_contexts

    return read_contexts(contexts_cfg, limit_per_split=context_limit(cfg))


def load_training_data(cfg: DataConfig, published_contexts: Path | None = None) -> TrainingData:
    """Everything a run reads (a loader: it writes nothing, see `load_context_set`)."""
    limits = cfg.max_examples or {}
    unknown = set(limits) - set(SPLITS)
    if unknown:
        raise ValueError(f"data.max_examples: unknown split(s) {sorted(unknown)}; expected some of {list(SPLITS)}")
    splits = {s: load_split(cfg.dataset, s, cfg.data_dir, limit=limits.get(s)) for s in SPLITS}
    contexts = load_context_set(cfg, published_contexts)
    if contexts is not None:
        # Keep only this run's images, so the logged content hash names exactly the contexts the run can see.
        used = {e.image_id for examples in splits.values() for e in examples}
        contexts = ContextSet(contexts.generator, {i: t for i, t in contexts.contexts.items() if i in used})
    data = TrainingData(
        dataset=cfg.dataset,
        task=DATASETS[cfg.dataset].task,
        labels=labels(cfg.dataset),
        splits=splits,
        contexts=contexts,
        images=ImageFolder(cfg.image_dir) if cfg.image_dir else None,
    )
    check_image_coverage(data, cfg.max_missing_image_rate)
    return data


def check_image_coverage(data: TrainingData, max_missing_rate: float) -> None:
    """Log each split's image coverage; fail (before any training) when a split misses more than `max_missing_rate`
    of its images: a data.image_dir pointing at the wrong place must not train a 'multimodal' model on no images."""
    if data.images is None:
        return
    image_dir = data.images.image_dir
    for split, coverage in data.image_coverage().items():
        log.info(
            "images: %s split %.1f%% of %d examples have an image in %s",
            split,
            100 * coverage,
            len(data.splits[split]),
            image_dir,
        )
        if 1.0 - coverage > max_missing_rate:
            raise ValueError(
                f"data.image_dir {image_dir}: {100 * (1 - coverage):.1f}% of the {split} split's images "
                f"are missing, over data.max_missing_image_rate={max_missing_rate:g}; point data.image_dir at "
                "<image_id>.jpg files or raise the rate"
            )
