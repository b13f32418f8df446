"""The registry step after a training run: register its model as a new version of `shapca-<dataset>`, then decide
champion or challenger (the rules: components/tracking/registry.py).

    version, decision = register_and_promote(result, cfg)
"""

from __future__ import annotations

from mlflow import MlflowClient

from components.config import ExperimentConfig
from components.runs.training_run import TrainRunResult
from components.tracking.mlflow_setup import setup_tracking
from components.tracking.model_card import write_model_card
from components.tracking.registry import promote, register_version, registered_model_name


def register_and_promote(result: TrainRunResult, cfg: ExperimentConfig):
    """Register the run's model as a new version of `shapca-<dataset>` and decide champion vs challenger."""
    if not result.model_uri:
        raise ValueError("this run logged no model (tracking.log_model is off): there is nothing to register")
    setup = setup_tracking(cfg.tracking.experiment)
    client = MlflowClient(tracking_uri=setup.tracking_uri, registry_uri=setup.tracking_uri)
    name = registered_model_name(result.dataset)
    # The dev metric is read from the version's LoggedModel (linked by the run), not copied into a tag.
    version = register_version(client, name, result.model_uri, run_id=result.run_id, metric_name=result.metric_name)
    decision = promote(
        client,
        name,
        version,
        metric_name=result.metric_name,
        min_delta=cfg.tracking.min_delta,
        min_metric=cfg.tracking.min_dev_metric,
        allow_partial_dev=cfg.tracking.allow_partial_dev,
    )
    write_model_card(client, name, version, decision)
    return version, decision
