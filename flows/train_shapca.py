"""The train-shapca flow: one training of Shap-CA from checked data to a registered, possibly promoted, model.

    validate-data (subflow) -> generate-contexts (subflow)
    -> train (fit on train, select on dev, score test with the best checkpoint, log the MLflow run and the model)
    -> register-and-promote (new version of shapca-<dataset>; champion only if it beats the current one on dev)
    -> markdown artifact -> TrainingOutcome (MLflow run id, test metrics, version, alias and why)

The parameter is the typed experiment config (dataset, encoders, context generator, alignment switches, epochs,
device, precision, num_gpus), defaulting to configs/default.yaml; `overrides` (`train.epochs=1`, ...) apply on top,
so a deployment's config stays in place when a run changes one field. With `train.num_gpus > 1` the train step runs
torchrun (DDP) itself. `contexts` says how the context step runs (backend hf or openai to generate them with a
model); by default it imports the precomputed set of `data.context_generator`.

A person watching the run in the Prefect UI sees the library's log lines, one line of metrics per epoch and the
progress artifact `training-progress-<dataset>` (flows/progress.py).

A failed run retried (`prefect flow-run retry <id>`) skips what finished: validation (cached per data version), a
finished training (cached within the flow run) and a registration already made; an unfinished training resumes from
its last epoch checkpoint, kept in `<train.output_dir>/flow-run-<id>/`.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from components.config import ExperimentConfig, load_config
from components.contexts.settings import ContextsConfig
from components.tracking.registry import registered_model_name
from components.training.data import context_limit, contexts_config_for
from flows.generate_contexts import generate_contexts_flow
from flows.outcomes import TrainingOutcome
from flows.tasks import (
    register_model,
    resolve_config,
    train,
    with_context_file,
    with_run_output_dir,
)
from flows.validate_data import validate_data

DEFAULT_CONFIG = load_config(Path(__file__).resolve().parents[1] / "configs" / "default.yaml")


@flow(name="train-shapca")
def train_shapca(
    config: ExperimentConfig = DEFAULT_CONFIG,
    overrides: list[str] | None = None,
    contexts: ContextsConfig | None = None,
) -> TrainingOutcome:
    cfg = with_run_output_dir(resolve_config(config, overrides), flow_run.id)
    validate_data(dataset=cfg.data.dataset, context_generator=cfg.data.context_generator, data_dir=cfg.data.data_dir)
    contexts_cfg = contexts_config_for(cfg.data, contexts)  # the same route `shapca train` takes in one process
    if contexts_cfg is not None:
        published = generate_contexts_flow(config=contexts_cfg, limit_per_split=context_limit(cfg.data))
        cfg = with_context_file(cfg, published["path"])
    run = train(cfg, resume=flow_run.run_count > 1)
    registered = register_model(run, cfg) if cfg.tracking.register_model else None  # (version, decision)
    outcome = TrainingOutcome.of(run, registered_model_name(cfg.data.dataset), registered)
    create_markdown_artifact(
        outcome.markdown(),
        key=f"training-{cfg.data.dataset}",
        description=f"Shap-CA on {cfg.data.dataset}: test metrics and the registry decision",
    )
    get_run_logger().info("%s", outcome.text())
    return outcome


if __name__ == "__main__":
    train_shapca()
