"""The inputs of a training run as MLflow datasets: the train/dev/test splits it read and the context set it used.

    inputs = build_run_inputs(data, data_version("."))      # a PandasDataset per split, one for the contexts
    run.log_inputs(inputs)                                  # the run's Datasets panel; contexts as an artifact too

Each dataset's ``source`` is where it comes from: a file of the DVC-tracked ``data/`` at the md5 ``data.dvc`` records
(source type ``dvc``), or the context-set file a run was pointed at. Its ``digest`` is computed here, over the whole
content, because MLflow's own pandas digest hashes only the first 10,000 rows and only string/number columns:

    split digest    = sha256(JSON of every row the run read: id, image, tokens, labels)[:32]
    context digest  = ContextSet.content_hash()[:32]   (sha256 over the sorted (image_id, text) pairs)

32 hex characters because MLflow stores at most 36. The same data gives the same digest on any machine; one changed
token, label or context text changes it. The context set is also logged as the run artifact
``contexts/<digest>.jsonl`` (with its manifest), so :func:`fetch_context_set` can get it back by digest from any
machine that reaches the tracking server.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.data.dataset_source import DatasetSource

from components.data.records import ContextSet
from components.tasks import get_task

DIGEST_CHARS = 32  # MLflow's dataset digest column holds 36 characters
CONTEXT_ARTIFACT_DIR = "contexts"
SPLIT_CONTEXTS = {"train": "training", "dev": "validation", "test": "testing"}  # mlflow.data.context of each split


class DvcDataSource(DatasetSource):
    """A file inside the DVC-tracked data directory, at the data version (``outs[].md5``) a DVC pointer records.

    ``dvc pull`` at a git commit whose ``data.dvc`` holds ``md5`` materialises exactly this file under ``data/``."""

    def __init__(self, dvc_file: str, md5: str, paths: list[str]):
        self.dvc_file = dvc_file
        self.md5 = md5
        self.paths = list(paths)  # relative to the data directory

    @staticmethod
    def _get_source_type() -> str:
        return "dvc"

    def load(self, data_dir: str | Path = "data") -> list[str]:
        """The local paths of the files, once ``dvc pull`` has materialised this data version."""
        local = [Path(data_dir) / p for p in self.paths]
        missing = [str(p) for p in local if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{', '.join(missing)}: not materialised; `dvc pull` at a commit whose "
                f"{self.dvc_file} records md5 {self.md5}"
            )
        return [str(p) for p in local]

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False  # built explicitly, never guessed from a string

    @classmethod
    def _resolve(cls, raw_source: Any) -> DvcDataSource:
        raise NotImplementedError("DvcDataSource is built explicitly")

    def to_dict(self) -> dict[str, Any]:
        return {"dvc_file": self.dvc_file, "md5": self.md5, "paths": self.paths}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> DvcDataSource:
        return cls(source_dict["dvc_file"], source_dict["md5"], source_dict["paths"])


def split_frame(task: str, examples: list) -> pd.DataFrame:
    """One row per example, every column a string or number (so MLflow can profile it and derive a schema): id, image,
    text, size and the gold labels as the task writes them (its `label_columns`)."""
    label_columns = get_task(task).label_columns
    return pd.DataFrame(
        [
            {"id": e.id, "image_id": e.image_id, "text": " ".join(e.tokens), "n_tokens": len(e.tokens)}
            | label_columns(e)
            for e in examples
        ]
    )


def frame_digest(frame: pd.DataFrame) -> str:
    """sha256 over every row (column names included) as JSON, cut to DIGEST_CHARS hex characters."""
    text = frame.to_json(orient="split", index=False, force_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DIGEST_CHARS]


def context_digest(contexts: ContextSet) -> str:
    return contexts.content_hash()[:DIGEST_CHARS]


@dataclass
class RunInputs:
    """What a run logs as inputs: ``{split: dataset}``, the context dataset, and the context set it describes."""

    splits: dict[str, Any]  # mlflow.data.pandas_dataset.PandasDataset
    contexts: Any | None
    context_set: ContextSet | None

    def context_artifact(self) -> str | None:
        """The run artifact path of the context set (``contexts/<digest>.jsonl``); None for a text-only run."""
        return None if self.contexts is None else f"{CONTEXT_ARTIFACT_DIR}/{self.contexts.digest}.jsonl"


def build_run_inputs(
    dataset: str,
    task: str,
    splits: dict[str, list],
    contexts: ContextSet | None,
    data_md5: str,
    split_files: dict[str, str],
    context_files: tuple[str, ...] = (),
    context_source: str | Path | None = None,
    dvc_file: str = "data.dvc",
) -> RunInputs:
    """MLflow datasets for ``splits`` (named ``<dataset>-<split>``) and ``contexts`` (``<dataset>-contexts-<gen>``).

    ``split_files`` maps a split to its file relative to the data directory (``DatasetSpec.files``) and
    ``context_files`` lists the published context files (``DatasetSpec.context_files[generator]``);
    ``context_source`` is the context-set file a run was pointed at instead (``data.context_file``)."""
    from mlflow.data.pandas_dataset import from_pandas

    datasets = {}
    for split, examples in splits.items():
        frame = split_frame(task, examples)
        datasets[split] = from_pandas(
            frame,
            source=DvcDataSource(dvc_file, data_md5, [split_files[split]]),
            name=f"{dataset}-{split}",
            digest=frame_digest(frame),
            targets=get_task(task).target_column if len(frame) else None,
        )
    context_dataset = None
    if contexts is not None:
        frame = pd.DataFrame(sorted(contexts.contexts.items()), columns=["image_id", "context"])
        if context_source is not None:
            # made by mlflow when the module is imported (artifact_dataset_sources): invisible to the type checker
            from mlflow.data.sources import LocalArtifactDatasetSource  # type: ignore[attr-defined]

            source: DatasetSource = LocalArtifactDatasetSource(str(Path(context_source).resolve()))
        else:
            source = DvcDataSource(dvc_file, data_md5, list(context_files))
        context_dataset = from_pandas(
            frame, source=source, name=f"{dataset}-contexts-{contexts.generator}", digest=context_digest(contexts)
        )
    return RunInputs(datasets, context_dataset, contexts)


def log_run_inputs(client, run_id: str, inputs: RunInputs) -> None:
    """Log the datasets as the run's inputs (context tag: training / validation / testing / contexts) and the context
    set as ``contexts/<digest>.jsonl`` with its manifest."""
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    entries = [
        DatasetInput(ds._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, SPLIT_CONTEXTS.get(split, split))])
        for split, ds in inputs.splits.items()
    ]
    if inputs.contexts is not None:
        tags = [
            InputTag(MLFLOW_DATASET_CONTEXT, "contexts"),
            InputTag("artifact", f"runs:/{run_id}/{inputs.context_artifact()}"),
        ]
        entries.append(DatasetInput(inputs.contexts._to_mlflow_entity(), tags=tags))
    client.log_inputs(run_id, datasets=entries)
    if inputs.context_set is not None and inputs.contexts is not None:
        from components.contexts.context_set import write_context_set

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{inputs.contexts.digest}.jsonl"
            write_context_set(path, inputs.context_set, {"run_id": run_id, "dataset_digest": inputs.contexts.digest})
            client.log_artifacts(run_id, tmp, CONTEXT_ARTIFACT_DIR)


def fetch_context_set(client, digest: str, dst_dir: str | Path, experiment_ids: list[str] | None = None) -> ContextSet:
    """The context set a run logged under ``digest``, downloaded to ``dst_dir`` and checked against its content hash.

    Looks in ``experiment_ids`` (default: every experiment) for a run whose inputs hold a dataset with this digest."""
    from components.contexts.context_set import read_context_set

    if experiment_ids is None:
        experiment_ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiment_ids, filter_string=f"dataset.digest = '{digest}' and dataset.context = 'contexts'", max_results=1
    )
    if not runs:
        raise LookupError(f"no run in experiments {experiment_ids} logged a context set with digest {digest}")
    run_id = runs[0].info.run_id
    local = Path(client.download_artifacts(run_id, CONTEXT_ARTIFACT_DIR, str(dst_dir)))
    path = local / f"{digest}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"run {run_id} lists context digest {digest} but has no artifact {CONTEXT_ARTIFACT_DIR}/{digest}.jsonl"
        )
    contexts = read_context_set(path)  # raises when the file no longer matches its manifest's content hash
    if context_digest(contexts) != digest:
        raise ValueError(f"{path}: contexts hash to {context_digest(contexts)}, not {digest}")
    return contexts


def training_inputs(data, data_cfg, data_md5: str) -> RunInputs:
    """:func:`build_run_inputs` for a run's ``TrainingData`` and its ``DataConfig`` (which files it read)."""
    from components.datasets import get_spec

    spec = get_spec(data.dataset)
    generator = data.contexts.generator if data.contexts is not None else None
    return build_run_inputs(
        data.dataset,
        data.task,
        data.splits,
        data.contexts,
        data_md5,
        spec.files,
        context_files=spec.context_files.get(generator, ()) if generator else (),
        context_source=data_cfg.context_file,
    )
