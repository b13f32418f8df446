"""One place that writes to an MLflow run: params once, metrics per step, artifacts, inputs, lineage.

    setup = setup_tracking(cfg.tracking.experiment)
    with start_run(setup, run_name="t17-blip2", log_system_metrics=True) as run:
        run.log_params(cfg.flat())
        run.log_lineage(collect_lineage(root, contexts, {"text": text_dir}))
        run.log_inputs(build_run_inputs(...))              # splits + context set as MLflow datasets
        run.log_metrics(scores.as_dict("dev"), step=epoch)
        run.log_artifact(png_path, "plots")
        run.link_metrics_to_model(model_id, ["dev_f1"], step=best_epoch, dataset=inputs.splits["dev"])

Params are immutable in MLflow; logging a key again with the same value is a no-op here, with a different value an
error that names the key (instead of MLflow's opaque batch failure). Values are stringified (None -> "None") and
checked against MLflow's length limit rather than silently cut.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from components.tracking.lineage import Lineage
from components.tracking.mlflow_setup import TrackingSetup
from components.tracking.run_inputs import RunInputs, log_run_inputs

MAX_PARAMS_PER_BATCH = 100  # MLflow's limits (mlflow.utils.validation)
MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_LENGTH = 6000


class RunLogger:
    """Writes to one run through an explicit client and run id (no reliance on the fluent active-run stack)."""

    def __init__(self, client, run_id: str):
        self.client = client
        self.run_id = run_id
        # A resumed run already holds params: start from them so that a changed value is caught here, by name.
        self._params: dict[str, str] = dict(client.get_run(run_id).data.params)

    # -- params / tags ------------------------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        fresh: dict[str, str] = {}
        for key, value in params.items():
            text = str(value)
            if len(text) > MAX_PARAM_LENGTH:
                raise ValueError(
                    f"param {key!r}: value has {len(text)} characters, MLflow keeps at most "
                    f"{MAX_PARAM_LENGTH}; log it as an artifact instead"
                )
            logged = self._params.get(key)
            if logged is not None and logged != text:
                raise ValueError(
                    f"param {key!r} already logged as {logged!r}; MLflow params cannot change (got {text!r})"
                )
            if logged is None:
                fresh[key] = text
        items = [Param(k, v) for k, v in fresh.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[start : start + MAX_PARAMS_PER_BATCH])
        self._params.update(fresh)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=items[start : start + MAX_PARAMS_PER_BATCH])

    def log_lineage(self, lineage: Lineage) -> None:
        """Data, code and encoder lineage as params (immutable, searchable), the commit also as a tag (shown in run
        lists). The context set is one of the run's datasets (:meth:`log_inputs`), not a param."""
        params = lineage.as_params()
        self.log_params(params)
        self.set_tags({"lineage.git_commit": params["lineage.git_commit"]})

    def log_inputs(self, inputs: RunInputs) -> None:
        """The splits and the context set as the run's MLflow datasets; the context set also as an artifact."""
        log_run_inputs(self.client, self.run_id, inputs)

    # -- metrics ------------------------------------------------------------------------------------------------------
    def log_metrics(
        self, metrics: Mapping[str, float], step: int | None = None, model_id: str | None = None, dataset=None
    ) -> None:
        """One batch per call; every metric of a call shares ``step`` and timestamp. Non-numbers are an error.

        ``model_id`` also records them as metrics of that LoggedModel, evaluated on ``dataset`` (an ``mlflow.data``
        dataset the run logged as input): what ``client.get_logged_model(model_id).metrics`` returns."""
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        linked = (
            {
                "model_id": model_id,
                "dataset_name": getattr(dataset, "name", None),
                "dataset_digest": getattr(dataset, "digest", None),
            }
            if model_id
            else {}
        )
        items = []
        for key, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"metric {key!r}: expected a number, got {value!r}") from exc
            # NaN is kept, not dropped: a diverged epoch must stay visible in the run (MLflow stores NaN).
            items.append(Metric(key, number, timestamp, step or 0, run_id=self.run_id, **linked))
        for start in range(0, len(items), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=items[start : start + MAX_METRICS_PER_BATCH])

    def link_metrics_to_model(self, model_id: str, keys: Sequence[str], step: int, dataset=None) -> dict[str, float]:
        """Record the run's already-logged values of ``keys`` at ``step`` as metrics of the LoggedModel ``model_id``,
        evaluated on ``dataset`` (an ``mlflow.data`` dataset the run logged as input).

        Each value is re-logged with its original timestamp and step: the run's own history stays as it was (the
        store drops an exact duplicate), and ``client.get_logged_model(model_id).metrics`` gains the metric with the
        dataset's name and digest. This is how the best dev epoch's scores, logged during training before any model
        existed, become the model's dev metrics. Returns ``{key: value}``; a key with no value at ``step`` is an
        error that names it."""
        from mlflow.entities import Metric

        on_model = {(m.key, m.step, m.timestamp) for m in self.client.get_logged_model(model_id).metrics or []}
        linked, items = {}, []
        for key in keys:
            at_step = [m for m in self.client.get_metric_history(self.run_id, key) if m.step == step]
            if not at_step:
                raise ValueError(f"metric {key!r} has no value at step {step} in run {self.run_id}")
            metric = max(at_step, key=lambda m: m.timestamp)
            linked[key] = metric.value
            if (key, step, metric.timestamp) in on_model:
                continue  # MLflow's log_model already linked it (it links the run's metrics at the model's step)
            items.append(
                Metric(
                    key,
                    metric.value,
                    metric.timestamp,
                    step,
                    model_id=model_id,
                    dataset_name=getattr(dataset, "name", None),
                    dataset_digest=getattr(dataset, "digest", None),
                    run_id=self.run_id,
                )
            )
        for start in range(0, len(items), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=items[start : start + MAX_METRICS_PER_BATCH])
        return linked

    # -- artifacts ----------------------------------------------------------------------------------------------------
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        local = Path(path)
        if not local.exists():
            raise FileNotFoundError(f"artifact {local} does not exist")
        if local.is_dir():
            self.client.log_artifacts(self.run_id, str(local), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(local), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        self.log_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str), artifact_file)

    def log_rows_csv(self, rows: Sequence[Mapping[str, Any]], artifact_file: str) -> None:
        """A table (e.g. ``Scores.per_type_rows()``) as CSV; the columns are those of the first row."""
        if not rows:
            raise ValueError(f"{artifact_file}: no rows to write")
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        self.log_text(buffer.getvalue(), artifact_file)


@contextlib.contextmanager
def start_run(
    setup: TrackingSetup,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    run_id: str | None = None,
    log_system_metrics: bool = False,
) -> Iterator[RunLogger]:
    """An active MLflow run in ``setup``'s experiment (fluent, so ``mlflow.pyfunc.log_model`` attaches to it).

    ``run_id`` resumes an existing run (an interrupted training continues its run instead of starting another).
    ``log_system_metrics`` samples CPU, memory, disk, network (and GPU when there is one) into ``system/*`` metrics
    every ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` seconds (MLflow's default 10) while the run is open (psutil).
    The run ends FINISHED when the block exits normally, FAILED when it raises an error, and KILLED when it is
    interrupted (KeyboardInterrupt, a termination signal Prefect raises as an exception): never left RUNNING.
    """
    import mlflow
    from mlflow import MlflowClient

    if mlflow.get_tracking_uri() != setup.tracking_uri:
        mlflow.set_tracking_uri(setup.tracking_uri)
    with mlflow.start_run(
        run_id=run_id,
        experiment_id=None if run_id else setup.experiment_id,
        run_name=None if run_id else run_name,
        tags=dict(tags or {}),
        log_system_metrics=log_system_metrics,
    ) as run:
        try:
            yield RunLogger(MlflowClient(tracking_uri=setup.tracking_uri), run.info.run_id)
        except Exception:
            raise  # MLflow ends the run FAILED
        except BaseException:
            mlflow.end_run("KILLED")
            raise
