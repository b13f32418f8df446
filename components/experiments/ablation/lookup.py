"""Which MLflow runs of the ablation experiment hold a given config: a FINISHED one to skip, an unfinished one with a
checkpoint to resume. A run's identity is its config read back from its params (`components.config.config_identity`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from components.config import SEED_KEY, ExperimentConfig, config_identity
from components.runs.run_dir import RUN_ID_FILE
from components.tracking.mlflow_setup import setup_tracking
from components.training.checkpoint import has_checkpoint

DEFAULT_EXPERIMENT = "shapca-ablation"
# The MLflow tags of a grid point start with this (module docstring of grid.py).
TAG_PREFIX = "ablation."


def matches(params: dict[str, str], identity: dict[str, str]) -> bool:
    """Whether a run's params hold exactly this identity (a key the run lacks is a mismatch)."""
    return all(params.get(k) == v for k, v in identity.items())


def experiment_client(experiment: str) -> tuple[Any, str]:
    setup = setup_tracking(experiment)
    return MlflowClient(tracking_uri=setup.tracking_uri), setup.experiment_id


def quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def find_finished_run(client, experiment_id: str, cfg: ExperimentConfig):
    """The newest FINISHED run in the experiment whose params hold this config's identity, or None."""
    identity = config_identity(cfg)
    # Narrow on the server, match exactly here: a filter on every key would be long and brittle.
    query = (
        f"attributes.status = 'FINISHED' and params.`data.dataset` = {quote(identity['data.dataset'])} "
        f"and params.`{SEED_KEY}` = {quote(identity[SEED_KEY])}"
    )
    for run in search_runs(client, experiment_id, query, order_by=["attributes.start_time DESC"]):
        if matches(run.data.params, identity):
            return run
    return None


def unfinished_run_to_resume(client, experiment_id: str, cfg: ExperimentConfig) -> str | None:
    """The run id in the point's output dir when that run is unfinished, of the same identity, with a checkpoint."""
    out = Path(cfg.train.output_dir)
    id_file = out / RUN_ID_FILE
    if not id_file.is_file() or not has_checkpoint(out / "checkpoints"):
        return None
    try:
        run = client.get_run(id_file.read_text().strip())
    except MlflowException:
        return None  # a run of another store, or deleted: start afresh
    if run.info.experiment_id != experiment_id or run.info.status == "FINISHED":
        return None
    return run.info.run_id if matches(run.data.params, config_identity(cfg)) else None


def search_runs(client, experiment_id: str, query: str, order_by: list[str] | None = None) -> Iterable:
    token = None
    while True:
        page = client.search_runs([experiment_id], query, max_results=1000, order_by=order_by, page_token=token)
        yield from page
        token = page.token
        if not token:
            return
