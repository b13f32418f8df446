"""What a person watching a flow run in the Prefect UI sees of a training: the library's log lines, one line of
metrics per epoch, a progress artifact that advances per epoch, and the HTTP clients' retry warnings.

All of it is best-effort: the training never waits on the Prefect API. Log records are queued by Prefect's API log
worker (a background thread), and the progress artifact is written by a thread of its own that keeps only the latest
value while the API is slow or down (`LatestOnly`). An API outage costs the UI some progress updates, not training time.

The library logs through the stdlib logger `components` and never imports Prefect; `forward_library_logs` attaches
Prefect's API log handler to that logger for the duration of a task, so its lines land in the flow run's logs, at the
level SHAPCA_LOG_LEVEL names (INFO when unset; components/common/log_level.py). It also forwards urllib3's warnings,
which is where the MLflow client (and boto3) say that they are retrying a request while a server is unreachable.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from typing import cast
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.logging.handlers import APILogHandler
from prefect.runtime import flow_run

from components.common.log_level import LIBRARY_LOGGER, log_level_from_env
from components.data.metrics import SELECTION_METRIC_KEY

# `Retrying (Retry(total=9, ...)) after connection broken by 'NewConnectionError(...)': /api/2.0/mlflow/runs/log-batch`
RETRY_LOGGERS = ("urllib3.connectionpool",)
HEADLINE = ("train_loss", "train_align_loss", "dev_precision", "dev_recall", SELECTION_METRIC_KEY)

log = logging.getLogger(__name__)


class _ThisFlowRun(logging.Filter):
    """Names the flow run on every record, so that a record logged from any thread (MLflow's system-metrics thread
    retries too) reaches the flow run's logs; the API handler otherwise needs the run context of the logging thread."""

    def __init__(self, flow_run_id: str):
        super().__init__()
        self.flow_run_id = flow_run_id

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "flow_run_id", None):
            record.flow_run_id = self.flow_run_id
        return True


@contextlib.contextmanager
def forward_library_logs(level: int | None = None) -> Iterator[None]:
    """Send the `components` logger's records at ``level`` and above (default: SHAPCA_LOG_LEVEL's), and the HTTP
    clients' retry warnings, to the current flow run's logs while the block runs."""
    level = log_level_from_env() if level is None else level
    targets = [(logging.getLogger(LIBRARY_LOGGER), level)]
    targets += [(logging.getLogger(name), logging.WARNING) for name in RETRY_LOGGERS]
    attached = []
    for logger, logger_level in targets:
        handler = APILogHandler(level=logger_level)
        if flow_run.id:
            handler.addFilter(_ThisFlowRun(flow_run.id))
        attached.append((logger, handler, logger.level))
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logger_level:
            logger.setLevel(logger_level)
    try:
        yield
    finally:
        for logger, handler, previous_level in attached:
            logger.removeHandler(handler)
            logger.setLevel(previous_level)


class LatestOnly:
    """Runs calls on a daemon thread, in order, never making the caller wait: a call submitted while another still
    waits replaces it (for progress, only the latest value matters). A failing call is logged once per outage."""

    def __init__(self, name: str):
        self._pending: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._failing = False
        self._idle = threading.Event()
        self._idle.set()
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def submit(self, call: Callable[[], None]) -> None:
        context = contextvars.copy_context()  # the run context: which flow and task run the call belongs to
        with self._lock:
            self._pending = lambda: context.run(call)
            self._idle.clear()
            self._wake.set()

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the submitted calls to finish; False if they did not."""
        return self._idle.wait(timeout)

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                call, self._pending = self._pending, None
                self._wake.clear()
            try:
                if call is not None:
                    call()
            except Exception as exc:  # the API is down or slow: the next update tries again
                if not self._failing:
                    log.warning("progress update failed (%s); training goes on, later updates retry", exc)
                self._failing = True
            else:
                self._failing = False
            with self._lock:
                if self._pending is None:
                    self._idle.set()


class EpochProgress:
    """A progress artifact keyed `training-progress-<dataset>`, at 100 * epoch / epochs, and a log line per epoch."""

    def __init__(self, dataset: str, epochs: int):
        self.epochs = max(1, epochs)
        self.key = f"training-progress-{dataset}"
        self.description = f"epochs of the {dataset} training done"
        self.artifact_id: UUID | None = None
        self.updates = LatestOnly(f"progress-{dataset}")
        self.updates.submit(lambda: self._show(0.0))

    def _show(self, percent: float) -> None:
        if self.artifact_id is None:
            # Called from sync code, Prefect's sync-or-async function returns the artifact's id, not a coroutine.
            self.artifact_id = cast(UUID, create_progress_artifact(percent, key=self.key, description=self.description))
        else:
            update_progress_artifact(self.artifact_id, percent)

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        # The headline numbers; the per-type ones are in MLflow.
        headline = {k: v for k, v in metrics.items() if k in HEADLINE} or metrics
        shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(headline.items()))
        get_run_logger().info("epoch %d/%d: %s", epoch, self.epochs, shown)
        percent = min(100.0, 100.0 * epoch / self.epochs)
        self.updates.submit(lambda: self._show(percent))

    def flush(self, timeout: float = 30.0) -> None:
        """At the end of the training: give the last update a bounded time to reach the API."""
        if not self.updates.flush(timeout):
            log.warning("the last progress update did not reach the Prefect API within %.0f s", timeout)
