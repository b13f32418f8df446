"""One training run as MLflow records it.

    result = train_and_log(cfg)     # data -> fit -> test -> MLflow run with model + artifacts

With `train.num_gpus > 1` (and not already inside torchrun) `train_and_log` re-launches itself under
`torchrun --nproc_per_node=N` (components/runs/launch.py); each rank calls `train_on_this_rank`, rank 0 logs to
MLflow and writes the result for the parent to read. Registering the result: components/runs/registration.py.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from mlflow import MlflowClient

from components.common.project_root import find_project_root
from components.config import ExperimentConfig
from components.data.metrics import SELECTION_METRIC, SELECTION_METRIC_KEY, confusion_matrix
from components.model.encoders import resolve_encoder_path
from components.runs.run_dir import RUN_ID_FILE, claim_output_dir, run_to_continue
from components.serving.packaging import log_shapca_model
from components.tracking.lineage import collect_lineage
from components.tracking.mlflow_setup import setup_tracking
from components.tracking.plots import confusion_matrix_png, shapley_heatmap_png
from components.tracking.run_inputs import training_inputs
from components.tracking.run_logging import start_run
from components.training.alignment_probe import probe_alignment
from components.training.data import TrainingData, load_training_data, publish_run_contexts
from components.training.trainer import EpochCallback, fit

log = logging.getLogger(__name__)


@dataclass
class TrainRunResult:
    run_id: str
    model_uri: str  # the logged pyfunc (models:/m-...); "" when tracking.log_model is off
    dev_metric: float
    metric_name: str
    test_metrics: dict[str, float]
    best_epoch: int
    wall_seconds: float
    dataset: str


def encoder_dirs(cfg: ExperimentConfig) -> dict[str, Path]:
    """Local directories of the pretrained encoders a run starts from (their weights are checksummed for lineage)."""
    dirs = {"text": resolve_encoder_path(cfg.model.text_encoder)}
    if cfg.model.context_encoder:
        dirs["context"] = resolve_encoder_path(cfg.model.context_encoder)
    if cfg.model.image_encoder:
        dirs["image"] = resolve_encoder_path(str(cfg.model.image_encoder))
    return dirs


def _log_shapley_heatmap(run, model, data: TrainingData, out_dir: Path) -> None:
    """Which context contributes to which text, on one real dev batch (with its images, when the run reads images):
    the picture of what alignment learned."""
    contexts = data.context_texts
    if contexts is None or model.config.alignment != "shapley":
        return
    batch_examples = [e for e in data.splits["dev"] if e.image_id in contexts][:12]
    if len(batch_examples) < 2:
        return
    model.eval()
    with torch.no_grad():
        out = model(model.processor(data.example_dataset(batch_examples)))
    if out.shapley is None:
        return
    path = shapley_heatmap_png(
        out.shapley.float().cpu().numpy(),  # (N, N): phi[i, j] = context i's Shapley value for text j
        [contexts[e.image_id] for e in batch_examples],
        [" ".join(e.tokens) for e in batch_examples],
        out_dir / "shapley_heatmap.png",
    )
    run.log_artifact(path, "plots")


def train_on_this_rank(
    cfg: ExperimentConfig, resume: bool, tags: dict[str, str] | None = None, on_epoch_end: EpochCallback | None = None
) -> TrainRunResult | None:
    """Train (this rank's share) and, on rank 0, log everything to MLflow. Returns None on other ranks.

    `train_and_log` calls it in this process; under torchrun every rank calls it from components/runs/launch.py."""
    started = time.perf_counter()
    # The run publishes its context set (a no-op when the flow's generate-contexts step already did: data.context_file),
    # then reads it like any loader.
    data = load_training_data(cfg.data, publish_run_contexts(cfg.data))
    if int(os.environ.get("RANK", "0")) != 0:
        fit(cfg, data, resume=resume)
        return None

    root = find_project_root()
    setup = setup_tracking(cfg.tracking.experiment)
    run_name = f"{cfg.data.dataset}-{cfg.data.context_generator}-{cfg.model.context_mode}-{cfg.model.alignment}"
    out_dir = Path(cfg.train.output_dir)
    # A resumed run continues its MLflow run, so an interrupted training leaves one run, not two. The directory is
    # claimed first, then what --resume may continue is decided (and a killed run marked) before a run is opened, so a
    # refusal changes no run's status (components/runs/run_dir.py).
    run_id_file = out_dir / RUN_ID_FILE
    client = MlflowClient(setup.tracking_uri)
    with (
        claim_output_dir(out_dir),
        start_run(
            setup,
            run_name=run_name,
            run_id=run_to_continue(client, cfg, out_dir, resume),
            tags=tags,
            log_system_metrics=True,
        ) as run,
    ):
        run_id_file.write_text(run.run_id)
        run.log_params(cfg.flat())
        run.log_params({f"data.{s}_size": len(ex) for s, ex in data.splits.items()})
        run.log_params({f"data.{s}_context_coverage": round(c, 4) for s, c in data.context_coverage().items()})
        run.log_params({f"data.{s}_image_coverage": round(c, 4) for s, c in data.image_coverage().items()})
        lineage = collect_lineage(root, data.contexts, encoder_dirs(cfg))
        run.log_lineage(lineage)
        inputs = training_inputs(data, cfg.data, lineage.data_version)
        run.log_inputs(inputs)

        def epoch_done(epoch: int, metrics: dict[str, float]) -> None:
            run.log_metrics(metrics, step=epoch)
            if on_epoch_end is not None:
                on_epoch_end(epoch, metrics)

        result = fit(
            cfg, data, resume=resume, on_epoch_end=epoch_done, on_step=lambda step, m: run.log_metrics(m, step=step)
        )

        test = result.test
        if test is None:
            raise RuntimeError("fit scores the test split on rank 0, and returned no test evaluation")
        run.log_metrics(
            {f"best_dev_{k}": v for k, v in result.best_dev.items()}
            | {"best_epoch": result.best_epoch, "train_seconds": result.train_seconds}
        )
        run.log_rows_csv(test.scores.per_type_rows(), "tables/test_per_type.csv")
        run.log_text(test.scores.format_table(), "tables/test_per_type.txt")
        run.log_dict({"history": result.history, "stopped_early": result.stopped_early}, "history.json")
        with tempfile.TemporaryDirectory() as tmp:
            labels, counts = confusion_matrix(test.confusion_gold, test.confusion_pred)
            run.log_artifact(confusion_matrix_png(labels, counts, Path(tmp) / "test_confusion.png"), "plots")
            _log_shapley_heatmap(run, result.model, data, Path(tmp))
        if data.contexts is not None and cfg.model.context_mode == "fusion":
            # How sharply the alignment finds each text's own context, and how open the fusion gates are (dev).
            run.log_metrics(probe_alignment(result.model, data, "dev", cfg.train.batch_size).metrics())
        model_uri, model_id = "", None
        if cfg.tracking.log_model:
            info = log_shapca_model(result.checkpoint_dir / "best", data.task)
            model_uri, model_id = info.model_uri, info.model_id
            # The model's own metrics (MLflow 3 LoggedModel): the best dev epoch's scores and the test scores.
            run.link_metrics_to_model(
                info.model_id,
                [f"dev_{k}" for k in result.best_dev],
                step=result.best_epoch,
                dataset=inputs.splits["dev"],
            )
        run.log_metrics(test.scores.as_dict("test"), model_id=model_id, dataset=inputs.splits["test"])

    return TrainRunResult(
        run_id=run.run_id,
        model_uri=model_uri,
        dev_metric=result.best_dev.get(SELECTION_METRIC, float("nan")),
        metric_name=SELECTION_METRIC_KEY,
        test_metrics=test.scores.as_dict("test"),
        best_epoch=result.best_epoch,
        wall_seconds=time.perf_counter() - started,
        dataset=cfg.data.dataset,
    )


def _train_under_torchrun(cfg: ExperimentConfig, resume: bool, tags: dict[str, str] | None) -> TrainRunResult:
    with tempfile.TemporaryDirectory() as tmp:
        config_path, result_path = Path(tmp) / "config.json", Path(tmp) / "result.json"
        config_path.write_text(json.dumps({"config": cfg.model_dump(mode="json"), "tags": tags or {}}))
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={cfg.train.num_gpus}",
            "-m",
            "components.runs.launch",
            "--config-json",
            str(config_path),
            "--result",
            str(result_path),
        ] + (["--resume"] if resume else [])
        log.info("launching DDP training: %s", " ".join(command))
        subprocess.run(command, check=True)
        return TrainRunResult(**json.loads(result_path.read_text()))


def train_and_log(
    cfg: ExperimentConfig,
    *,
    resume: bool = False,
    tags: dict[str, str] | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> TrainRunResult:
    """Train and log one run; `tags` are set on the MLflow run when it starts; `on_epoch_end(epoch, metrics)` is
    called after each epoch's metrics are logged (in this process; not under torchrun, whose ranks are children)."""
    if cfg.train.num_gpus > 1 and "WORLD_SIZE" not in os.environ:
        return _train_under_torchrun(cfg, resume, tags)
    result = train_on_this_rank(cfg, resume, tags, on_epoch_end)
    assert result is not None, "train_and_log runs on rank 0; other ranks go through components.runs.launch"
    return result


def result_to_json(result: TrainRunResult) -> str:
    return json.dumps(asdict(result))
