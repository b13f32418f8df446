"""The ablation's FINISHED runs read back from MLflow: one `AblationRun` per (group, variant, config), the newest."""

from __future__ import annotations

from dataclasses import dataclass, field

import mlflow
from mlflow.exceptions import MlflowException

from components.config import SEED_KEY, identity_from_params, identity_hash
from components.data.metrics import SELECTION_METRIC_KEY
from components.experiments.ablation.lookup import (
    DEFAULT_EXPERIMENT,
    TAG_PREFIX,
    experiment_client,
    quote,
    search_runs,
)
from components.experiments.ablation.variants import VARIANTS


@dataclass
class AblationRun:
    run_id: str
    group: str
    variant: str
    seed: int
    config_hash: str
    setting_hash: str
    start_time_ms: int
    test_f1: float | None
    dev_f1: float | None  # dev micro-F1 of the epoch that was selected (best_dev_f1)
    per_type_f1: dict[str, float]
    best_epoch: int | None
    epochs_run: int
    wall_seconds: float | None  # the MLflow run's duration (end - start)
    commit: str
    dirty: bool
    resumed: bool
    identity: dict[str, str]  # the config params (without the excluded keys)
    probe: dict[str, float] = field(default_factory=dict)  # dev alignment probe: cosine_top1, context_gate, ...


def duration_seconds(run) -> float | None:
    if run.info.end_time is None or run.info.start_time is None:
        return None
    return (run.info.end_time - run.info.start_time) / 1000.0


def _epochs_run(client, run) -> int:
    """Epochs the run trained: its history.json artifact (complete, also for a resumed run, whose MLflow metrics
    start at the resumed epoch); the steps of its selection metric (dev_f1) where that artifact is missing."""
    try:
        history = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/history.json")["history"]
        return len({h["epoch"] for h in history})
    except (MlflowException, OSError, KeyError, TypeError, ValueError):
        return len({m.step for m in client.get_metric_history(run.info.run_id, SELECTION_METRIC_KEY)})


def _per_type(metrics: dict[str, float]) -> dict[str, float]:
    """`test_<TYPE>_f1` metrics (the micro `test_f1` excluded) -> {TYPE: f1}."""
    return {
        k[len("test_") : -len("_f1")]: v
        for k, v in metrics.items()
        if k.startswith("test_") and k.endswith("_f1") and k != "test_f1"
    }


PROBE_PREFIX = "dev_probe_"  # the alignment probe's metrics (components/training/alignment_probe.py)


def _probe(metrics: dict[str, float]) -> dict[str, float]:
    return {k[len(PROBE_PREFIX) :]: v for k, v in metrics.items() if k.startswith(PROBE_PREFIX)}


def collect_ablation_runs(experiment: str = DEFAULT_EXPERIMENT, group: str | None = None) -> list[AblationRun]:
    """FINISHED runs tagged by the ablation; of several runs with one config hash, the newest."""
    client, experiment_id = experiment_client(experiment)
    query = "attributes.status = 'FINISHED'"
    if group is not None:
        query += f" and tags.`{TAG_PREFIX}group` = {quote(group)}"
    newest: dict[tuple[str, str, str], AblationRun] = {}
    for run in search_runs(client, experiment_id, query):
        tags = run.data.tags
        if f"{TAG_PREFIX}variant" not in tags:
            continue  # not an ablation run (or finished but not yet tagged: `run_ablation` tags it when rerun)
        identity = identity_from_params(run.data.params)
        epochs_run = _epochs_run(client, run)
        best_epoch = run.data.metrics.get("best_epoch")
        item = AblationRun(
            run_id=run.info.run_id,
            group=tags[f"{TAG_PREFIX}group"],
            variant=tags[f"{TAG_PREFIX}variant"],
            seed=int(tags.get(f"{TAG_PREFIX}seed", run.data.params.get(SEED_KEY, "-1"))),
            # The tags are hashed from the config itself; recomputing from params is the fallback for older runs.
            config_hash=tags.get(f"{TAG_PREFIX}config_hash") or identity_hash(identity),
            setting_hash=tags.get(f"{TAG_PREFIX}setting_hash") or identity_hash(identity, include_seed=False),
            start_time_ms=run.info.start_time or 0,
            test_f1=run.data.metrics.get("test_f1"),
            dev_f1=run.data.metrics.get("best_dev_f1"),
            per_type_f1=_per_type(run.data.metrics),
            best_epoch=int(best_epoch) if best_epoch is not None else None,
            epochs_run=epochs_run,
            wall_seconds=duration_seconds(run),
            # The code the grid process ran (grid.py); HEAD at the run's start for runs from before that tag.
            commit=tags.get(f"{TAG_PREFIX}code_commit")
            or run.data.params.get("lineage.git_commit", tags.get("lineage.git_commit", "unknown")),
            dirty=tags.get(f"{TAG_PREFIX}code_dirty", run.data.params.get("lineage.git_dirty")) == "True",
            resumed=tags.get(f"{TAG_PREFIX}resumed") == "true",
            identity=identity,
            probe=_probe(run.data.metrics),
        )
        key = (item.group, item.variant, item.config_hash)
        if key not in newest or item.start_time_ms > newest[key].start_time_ms:
            newest[key] = item
    return sorted(
        newest.values(),
        key=lambda r: (r.group, VARIANTS[r.variant].number if r.variant in VARIANTS else 99, r.setting_hash, r.seed),
    )
