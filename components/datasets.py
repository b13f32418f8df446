"""The four benchmarks by name: where their files are, what task they pose, their label sets, and one entry point to
read any split of them (``load_split`` strict, ``read_split`` lenient) or the contexts written for their images.

Split names are canonical everywhere else in the project: "train", "dev", "test" (the files call dev valid.txt or
val.txt). Paths are relative to the data directory that ``dvc pull`` materialises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast, get_args

from components.data.context_files import ContextReadResult, read_blip2, read_mplug_owl
from components.data.records import ContextSet, Example, ReadResult
from components.tasks import TaskName
from components.tasks.joint.mnre_sentences import read_joint
from components.tasks.ner.conll import read_conll
from components.tasks.re.mnre import read_mnre
from components.tasks.re.records import NO_RELATION

logger = logging.getLogger(__name__)

Split = Literal["train", "dev", "test"]
SPLITS: tuple[str, ...] = get_args(Split)
Generator = Literal["blip2", "mplug-owl"]  # the published context sets
GeneratorOrNone = Literal["blip2", "mplug-owl", "none"]  # whose contexts a run reads: a published set, or "none"
DatasetName = Literal["twitter2015", "twitter2017", "mnre", "mnre-joint"]  # the keys of DATASETS

# The 23 MNRE relation labels: "None" first, then the 22 relations sorted.
MNRE_RELATIONS = [
    NO_RELATION,
    "/loc/loc/contain",
    "/misc/loc/held_on",
    "/misc/misc/part_of",
    "/org/loc/locate_at",
    "/org/org/alternate_names",
    "/org/org/subsidiary",
    "/per/loc/place_of_birth",
    "/per/loc/place_of_residence",
    "/per/misc/awarded",
    "/per/misc/nationality",
    "/per/misc/present_in",
    "/per/misc/race",
    "/per/misc/religion",
    "/per/org/member_of",
    "/per/per/alternate_names",
    "/per/per/alumi",  # sic: the published label
    "/per/per/charges",
    "/per/per/couple",
    "/per/per/neighbor",
    "/per/per/parent",
    "/per/per/peer",
    "/per/per/siblings",
]

_MPLUG_OWL_FILES = ("contexts/mplug-owl/train.txt", "contexts/mplug-owl/dev.txt", "contexts/mplug-owl/test.txt")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    task: TaskName  # the key of its task in the registry (components/tasks/)
    files: dict[str, str]  # canonical split -> path relative to the data directory
    labels: list[str]  # NER: entity types in a fixed order; re: 23 relations; joint: the 22 non-None relations
    sizes: dict[str, int]  # the published number of examples per split (sentences for ner/joint, instances for re)
    # (path, split, labels, limit) -> the split's records, read leniently: the reader of the dataset's file format
    reader: Callable[[Path, str, list[str], int | None], ReadResult]
    # generator -> the files that hold contexts for this dataset's images; absent: none published for it
    context_files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""

    def publishes_contexts(self, generator: str | None = None) -> bool:
        """Whether a published context set of `generator` (None: of any generator) describes this dataset's images.
        The published sets cover the Twitter-2015/2017 images only: an MNRE run reads contexts only from a set
        generated for it. The one place this rule is written."""
        if generator is None:
            return any(self.context_files.values())
        return bool(self.context_files.get(generator))


def _read_ner(path: Path, split: str, labels: list[str], limit: int | None) -> ReadResult:
    return read_conll(path, split=split, entity_types=labels, limit=limit, strict=False)


def _read_re(path: Path, split: str, labels: list[str], limit: int | None) -> ReadResult:
    return read_mnre(path, split=split, relations=labels, limit=limit, strict=False)


def _read_joint(path: Path, split: str, labels: list[str], limit: int | None) -> ReadResult:
    return cast(ReadResult, read_joint(path, split=split, relations=MNRE_RELATIONS, limit=limit, strict=False))


DATASETS: dict[str, DatasetSpec] = {
    "twitter2015": DatasetSpec(
        name="twitter2015",
        task="ner",
        files={"train": "twitter2015/train.txt", "dev": "twitter2015/valid.txt", "test": "twitter2015/test.txt"},
        labels=["PER", "LOC", "ORG", "OTHER"],
        sizes={"train": 4000, "dev": 1000, "test": 3257},
        reader=_read_ner,
        context_files={"blip2": ("contexts/blip2/twitter2015.txt",), "mplug-owl": _MPLUG_OWL_FILES},
        description="Twitter-2015 MNER (Zhang et al. 2018)",
    ),
    "twitter2017": DatasetSpec(
        name="twitter2017",
        task="ner",
        files={"train": "twitter2017/train.txt", "dev": "twitter2017/valid.txt", "test": "twitter2017/test.txt"},
        labels=["PER", "LOC", "ORG", "MISC"],
        sizes={"train": 3373, "dev": 723, "test": 723},
        reader=_read_ner,
        context_files={"blip2": ("contexts/blip2/twitter2017.txt",), "mplug-owl": _MPLUG_OWL_FILES},
        description="Twitter-2017 MNER (Lu et al. 2018)",
    ),
    "mnre": DatasetSpec(
        name="mnre",
        task="re",
        files={"train": "mnre/train.txt", "dev": "mnre/val.txt", "test": "mnre/test.txt"},
        labels=list(MNRE_RELATIONS),
        sizes={"train": 12247, "dev": 1624, "test": 1614},
        reader=_read_re,
        description="MNRE v2 multimodal relation extraction (Zheng et al. 2021)",
    ),
    "mnre-joint": DatasetSpec(
        name="mnre-joint",
        task="joint",
        files={"train": "mnre/train.txt", "dev": "mnre/val.txt", "test": "mnre/test.txt"},
        labels=sorted(MNRE_RELATIONS[1:]),
        # Sentences obtained by grouping MNRE instances on (tokens, image id); measured on the published files.
        sizes={"train": 7356, "dev": 931, "test": 914},
        reader=_read_joint,
        description="MNRE sentences with all their entities and relation triples (joint extraction, JMERE stand-in)",
    ),
}


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")
    return DATASETS[name]


def labels(name: str) -> list[str]:
    """NER: the entity types (the BIO tags derive from them); mnre: the 23 relations, "None" first; mnre-joint: the
    22 others."""
    return list(get_spec(name).labels)


def split_path(name: str, split: str, data_dir: Path = Path("data")) -> Path:
    spec = get_spec(name)
    if split not in spec.files:
        raise KeyError(f"unknown split {split!r} for {name}: expected one of {', '.join(spec.files)}")
    path = Path(data_dir) / spec.files[split]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file for {name}/{split} (is the data pulled? run `dvc pull`)")
    return path


def read_split(name: str, split: str, data_dir: Path = Path("data"), limit: int | None = None) -> ReadResult:
    """Read a split leniently: the examples the reader accepted and every problem it found."""
    spec = get_spec(name)
    return spec.reader(split_path(name, split, data_dir), split, spec.labels, limit)


def load_split(
    name: str, split: str, data_dir: Path = Path("data"), strict: bool = True, limit: int | None = None
) -> list[Example]:
    """Read a split; strict raises ``DataFormatError`` on any problem, lenient logs them and keeps the good rows."""
    result = read_split(name, split, data_dir, limit=limit)
    if strict:
        return result.examples_or_raise()
    for problem in result.problems:
        logger.warning("left out: %s", problem)
    return result.examples


def read_contexts(generator: str, dataset: str, data_dir: Path = Path("data")) -> ContextReadResult:
    """Lenient form of ``load_contexts``: the contexts and the problems of their files."""
    spec = get_spec(dataset)
    if generator not in ("blip2", "mplug-owl"):
        raise ValueError(f"unknown context generator {generator!r}: expected 'blip2' or 'mplug-owl'")
    if not spec.publishes_contexts(generator):
        logger.warning("no published %s contexts cover %s: its context set is empty", generator, dataset)
        return ContextReadResult(ContextSet(generator=generator, contexts={}))
    paths = [Path(data_dir) / f for f in spec.context_files[generator]]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such context file for {generator}/{dataset} (run `dvc pull`)")
    if generator == "blip2":
        return read_blip2(paths[0], strict=False)
    return read_mplug_owl(paths, strict=False)


def load_contexts(generator: str, dataset: str, data_dir: Path = Path("data")) -> ContextSet:
    """image_id -> context text written by ``generator`` for ``dataset``'s images (strict: bad files raise).

    blip2 has one file per Twitter dataset; mplug-owl's three files are one set shared by both Twitter datasets, so
    its ContextSet holds descriptions of both. mnre / mnre-joint have no published contexts: an empty set, logged.
    """
    return read_contexts(generator, dataset, data_dir).context_set_or_raise()
