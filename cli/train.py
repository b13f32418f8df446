"""`shapca train`, `shapca evaluate`, `shapca predict`: training and model consumers without Prefect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cli._choices import Dataset, GeneratorOrNone, Split

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="experiment YAML (configs/)")]
OverrideOption = Annotated[
    list[str] | None, typer.Option("--override", "-o", help="section.field=value, repeatable (train.epochs=1)")
]


def train(
    config: ConfigOption = Path("configs/default.yaml"),
    override: OverrideOption = None,
    resume: Annotated[bool, typer.Option(help="continue from the output directory's last checkpoint")] = False,
    register: Annotated[bool, typer.Option(help="register the model and decide the champion alias")] = True,
    per_config_dir: Annotated[
        bool,
        typer.Option(
            help="write under <train.output_dir>/<config hash>/ (default), so trainings of different configs never "
            "share best/, last/ or the run id; --no-per-config-dir uses train.output_dir itself"
        ),
    ] = True,
) -> None:
    """Train one model, log it to MLflow and (by default) register and promote it."""
    from components.config import config_hash, load_config
    from components.data.metrics import SELECTION_METRIC_KEY
    from components.runs.registration import register_and_promote
    from components.runs.training_run import train_and_log

    cfg = load_config(config, override or [])
    if per_config_dir:
        # The hash leaves out train.output_dir itself, so `--resume` with the same config finds the same directory; two
        # trainings of the same config at once are refused by the directory's lock (components/runs/run_dir.py).
        out = cfg.train.output_dir / config_hash(cfg)
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"output_dir": out})})
    result = train_and_log(cfg, resume=resume)
    summary = {
        "run_id": result.run_id,
        "model_uri": result.model_uri,
        SELECTION_METRIC_KEY: result.dev_metric,
        "test_f1": result.test_metrics.get("test_f1"),
        "wall_seconds": round(result.wall_seconds, 1),
    }
    if register and cfg.tracking.register_model:
        version, decision = register_and_promote(result, cfg)
        summary |= {"version": version, "alias": decision.alias, "reason": decision.reason}
    typer.echo(json.dumps(summary, indent=2))


def evaluate(
    model: Annotated[str, typer.Option(help="models:/shapca-twitter2017@champion, runs:/..., or models:/m-...")],
    dataset: Annotated[Dataset, typer.Option(help="the benchmark to score on")],
    split: Annotated[Split, typer.Option(help="the split to score")] = "test",
    data_dir: Annotated[Path, typer.Option(help="the DVC-materialised data")] = Path("data"),
    context_generator: Annotated[GeneratorOrNone, typer.Option(help="whose image contexts to read")] = "blip2",
) -> None:
    """Score any logged or registered model on a dataset split and log the result to MLflow."""
    from components.runs.model_evaluation import evaluate_model_uri

    metrics = evaluate_model_uri(model, dataset, split, data_dir, context_generator)
    headline = [f"{split}_{m}" for m in ("precision", "recall", "f1", "accuracy")]
    typer.echo(json.dumps({k: round(metrics[k], 4) for k in headline if k in metrics}, indent=2))


# A JSONL line longer than this cannot hold a row the model accepts (the text and context limits, 4 bytes per
# character at most in UTF-8, plus room for the JSON around them): it is refused before the model is loaded.
def _max_line_bytes() -> int:
    from components.runs.batch_scoring import max_line_bytes

    return max_line_bytes()


def read_prediction_rows(path: Path) -> list[dict]:
    """The JSONL rows of `shapca predict`, each problem reported as `<file>:<line>: what was expected` (BadParameter)
    before any model is loaded: not UTF-8, an oversized line, not JSON, not an object, an empty file, no `text`
    field on any line. A line whose `text` is missing or bad on its own becomes that row's error in the output."""
    max_bytes = _max_line_bytes()
    rows: list[dict] = []
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if len(raw) > max_bytes:
                raise typer.BadParameter(
                    f"{path}:{number}: line is {len(raw)} bytes, over the limit of {max_bytes} "
                    "(the longest row the model accepts)"
                )
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise typer.BadParameter(
                    f"{path}:{number}: not valid UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1}); "
                    "save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise typer.BadParameter(f"{path}:{number}: not valid JSON ({error.msg})") from error
            if not isinstance(row, dict):
                raise typer.BadParameter(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    if not rows:
        raise typer.BadParameter(f"{path}: no input: expected one JSON object per line, each with a 'text' field")
    if not any("text" in row for row in rows):
        raise typer.BadParameter(
            f"{path}: no line has a 'text' field (line 1 has {sorted(rows[0])}); expected e.g. "
            '{"text": "Obama visits Paris"}'
        )
    return rows


def predict(
    model: Annotated[str, typer.Option(help="model URI, e.g. models:/shapca-twitter2017@champion")],
    input: Annotated[Path, typer.Option(help="JSONL: one object per line with text, optional context/image/head/tail")],
    output: Annotated[Path, typer.Option(help="JSONL written with one prediction per input line")],
) -> None:
    """Run a registered model over a JSONL file; a bad line gets an error field, the rest are still predicted."""
    rows = read_prediction_rows(input)  # every file-level problem is reported before the model is loaded
    import mlflow
    import pandas as pd

    from components.serving.limits import ServingLimits

    loaded = mlflow.pyfunc.load_model(model)
    # A model predicts any number of rows in process, but a version logged before that (its code travels with it)
    # refuses more than max_rows per call: chunks of max_rows serve both.
    chunk = ServingLimits.resolve().max_rows
    predictions = []
    for start in range(0, len(rows), chunk):
        predictions += loaded.predict(pd.DataFrame(rows[start : start + chunk]))
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as fh:
        for prediction in predictions:
            fh.write(json.dumps(prediction, ensure_ascii=False) + "\n")
    errors = sum(p.get("error") is not None for p in predictions)
    typer.echo(f"{len(predictions)} predictions -> {output} ({errors} rows with errors)")


def add_commands(app: typer.Typer) -> None:
    app.command(
        epilog="Example: shapca train -c configs/default.yaml -o train.epochs=1 "
        "-o 'data.max_examples={train: 64, dev: 32, test: 32}'"
    )(train)
    app.command(
        epilog="Example: shapca evaluate --model models:/shapca-twitter2017@champion --dataset twitter2017 --split test"
    )(evaluate)
    app.command(
        epilog="Example: shapca predict --model models:/shapca-twitter2017@champion --input tweets.jsonl "
        '--output predictions.jsonl  (a line: {"text": "Obama visits Paris", "context": '
        '"a man near a tower"})'
    )(predict)
