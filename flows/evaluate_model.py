"""The evaluate-model flow: score any registered version of Shap-CA on any split of any dataset.

models:/<name>/<version> or models:/<name>@<alias> -> evaluate-model-uri (loads the pyfunc from MLflow, scores
the split, logs an evaluation run in the `shapca-evaluations` experiment) -> markdown artifact -> metrics
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from components.tracking.registry import registered_model_name
from flows.outcomes import metrics_markdown
from flows.tasks import evaluate, registered_model_uri


@flow(name="evaluate-model")
def evaluate_model(
    dataset: str = "twitter2017",
    version: str = "champion",
    model_name: str | None = None,
    split: str = "test",
    context_generator: str = "blip2",
    data_dir: Path = Path("data"),
) -> dict:
    """`version` is a number or an alias (champion, challenger); `model_name` defaults to shapca-<dataset>."""
    model_uri = registered_model_uri(model_name or registered_model_name(dataset), version)
    metrics = evaluate(model_uri, dataset, split, data_dir, context_generator)
    title = f"{model_uri} on {dataset}/{split}"
    create_markdown_artifact(
        metrics_markdown(title, metrics),
        key=f"evaluation-{dataset}-{split}",
        description=f"Scores of {model_uri} on {dataset}/{split}",
    )
    get_run_logger().info("%s: %s", title, metrics)
    return {"model_uri": model_uri, "dataset": dataset, "split": split, "metrics": metrics}


if __name__ == "__main__":
    evaluate_model()
