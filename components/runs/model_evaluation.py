"""Score any logged or registered model on a split and record the score as its own MLflow run."""

from __future__ import annotations

from pathlib import Path

from components.config import DataConfig
from components.serving.pyfunc import load_shapca
from components.tracking.mlflow_setup import setup_tracking
from components.tracking.run_logging import start_run
from components.training.data import load_training_data
from components.training.evaluate import evaluate_split


def evaluate_model_uri(
    model_uri: str,
    dataset: str,
    split: str = "test",
    data_dir: Path = Path("data"),
    context_generator: str = "blip2",
    experiment: str = "shapca-evaluations",
    limit: int | None = None,
) -> dict[str, float]:
    """Score any logged or registered model (e.g. `models:/shapca-twitter2017@champion`) and log it as a run."""
    setup = setup_tracking(experiment)
    model = load_shapca(model_uri)
    data_cfg = DataConfig(
        dataset=dataset,
        data_dir=data_dir,
        context_generator=context_generator,
        max_examples={s: limit for s in ("train", "dev", "test")} if limit else None,
    )
    data = load_training_data(data_cfg)
    evaluation = evaluate_split(model, data, split)
    metrics = evaluation.scores.as_dict(split)
    with start_run(setup, run_name=f"evaluate-{dataset}-{split}") as run:
        run.log_params(
            {
                "model_uri": model_uri,
                "dataset": dataset,
                "split": split,
                "context_generator": context_generator,
                "limit": limit,
            }
        )
        run.log_metrics(metrics)
        run.log_text(evaluation.scores.format_table(), f"tables/{split}_per_type.txt")
    return metrics
