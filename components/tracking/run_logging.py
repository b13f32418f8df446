"""One place that writes to an MLflow run: params once, metrics per step, artifacts, lineage.

    setup = setup_tracking(cfg.tracking.experiment)
    with start_run(setup, run_name="t17-blip2") as run:
        run.log_params(cfg.flat())
        run.log_lineage(collect_lineage(root, contexts, {"text": text_dir}))
        run.log_metrics(scores.as_dict("dev"), step=epoch)
        run.log_artifact(png_path, "plots")

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
                raise ValueError(f"param {key!r}: value has {len(text)} characters, MLflow keeps at most "
                                 f"{MAX_PARAM_LENGTH}; log it as an artifact instead")
            logged = self._params.get(key)
            if logged is not None and logged != text:
                raise ValueError(f"param {key!r} already logged as {logged!r}; MLflow params cannot change "
                                 f"(got {text!r})")
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
        """Lineage as params (immutable, searchable) and the headline ones as tags (shown in run lists)."""
        params = lineage.as_params()
        self.log_params(params)
        self.set_tags({k: params[k] for k in ("lineage.data_version", "lineage.git_commit", "lineage.context_hash")})

    # -- metrics ------------------------------------------------------------------------------------------------------
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """One batch per call; every metric of a call shares ``step`` and timestamp. Non-numbers are an error."""
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        items = []
        for key, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"metric {key!r}: expected a number, got {value!r}") from exc
            # NaN is kept, not dropped: a diverged epoch must stay visible in the run (MLflow stores NaN).
            items.append(Metric(key, number, timestamp, step or 0))
        for start in range(0, len(items), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=items[start : start + MAX_METRICS_PER_BATCH])

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
) -> Iterator[RunLogger]:
    """An active MLflow run in ``setup``'s experiment (fluent, so ``mlflow.pyfunc.log_model`` attaches to it).

    ``run_id`` resumes an existing run (an interrupted training continues its run instead of starting another).
    The run ends FINISHED when the block exits normally and FAILED when it raises.
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
    ) as run:
        yield RunLogger(MlflowClient(tracking_uri=setup.tracking_uri), run.info.run_id)
