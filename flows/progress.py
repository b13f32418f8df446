"""What a person watching a flow run in the Prefect UI sees of a training: the library's log lines, one line of
metrics per epoch, and a progress artifact that advances per epoch.

The library logs through the stdlib logger `components` and never imports Prefect; `forward_library_logs` attaches
Prefect's API log handler to that logger for the duration of a task, so its lines land in the flow run's logs, at the
level SHAPCA_LOG_LEVEL names (INFO when unset; components/common/log_level.py).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import cast
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.logging.handlers import APILogHandler

from components.common.log_level import LIBRARY_LOGGER, log_level_from_env
from components.data.metrics import SELECTION_METRIC_KEY

HEADLINE = ("train_loss", "train_align_loss", "dev_precision", "dev_recall", SELECTION_METRIC_KEY)


@contextlib.contextmanager
def forward_library_logs(level: int | None = None) -> Iterator[None]:
    """Send the `components` logger's records at ``level`` and above (default: SHAPCA_LOG_LEVEL's) to the current flow
    run's logs while the block runs."""
    level = log_level_from_env() if level is None else level
    library = logging.getLogger(LIBRARY_LOGGER)
    handler = APILogHandler(level=level)
    previous_level = library.level
    library.addHandler(handler)
    if library.getEffectiveLevel() > level:
        library.setLevel(level)
    try:
        yield
    finally:
        library.removeHandler(handler)
        library.setLevel(previous_level)


class EpochProgress:
    """A progress artifact keyed `training-progress-<dataset>`, at 100 * epoch / epochs, and a log line per epoch."""

    def __init__(self, dataset: str, epochs: int):
        self.epochs = max(1, epochs)
        # Called from sync code, Prefect's sync-or-async function returns the artifact's id, not a coroutine.
        self.artifact_id = cast(
            UUID,
            create_progress_artifact(
                0.0, key=f"training-progress-{dataset}", description=f"epochs of the {dataset} training done"
            ),
        )

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        # The headline numbers; the per-type ones are in MLflow.
        headline = {k: v for k, v in metrics.items() if k in HEADLINE} or metrics
        shown = ", ".join(f"{k}={v:.4f}" for k, v in sorted(headline.items()))
        get_run_logger().info("epoch %d/%d: %s", epoch, self.epochs, shown)
        update_progress_artifact(self.artifact_id, min(100.0, 100.0 * epoch / self.epochs))
