"""An attempt of a deployment's flow run watches its own flow run, so that it stops when it must even when its worker
cannot make it:

- **Cancellation after a Prefect API outage.** The worker watches its runs for cancellation (websocket, polling as a
  fallback); after about 30 s without the API it gives up for good ("Cancellation observer failed. Flow run
  cancellation disabled.", `FlowRunExecutorContext._handle_cancellation_observer_failure` in
  prefect/runner/_flow_run_executor.py), and a later Cancel leaves the run Cancelling while it trains on. When the flow
  run has been Cancelling for `grace_s` (the worker, when it still watches, has stopped the process by then), the
  attempt cancels itself: its MLflow run marked KILLED, the flow run set Cancelled, the process ended.
- **An attempt that no longer owns its flow run.** When the flow run is no longer Running as this attempt (marked
  Crashed by the missed-heartbeats automation while this process was cut off from the API, crash-reported late by a
  worker, rescheduled, or running again as a newer attempt), this attempt stops at once, so that two attempts never
  train at once; the retry resumes from the checkpoint on shared storage.

The watcher is a daemon thread that reads the flow run every `interval_s`; an unreachable API only makes it try again
later (it never gives up). Stopping ends the process with status 0 after marking the MLflow run KILLED: a zero status
makes the worker report nothing (Prefect reports Crashed for a non-zero exit), and an exception raised into the flow
would make the engine force the run to Crashed over the Cancelled state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.logging.handlers import APILogWorker
from prefect.runtime import deployment, flow_run
from prefect.states import Cancelled

from components.runs.run_dir import mark_interrupted

INTERVAL_ENV, GRACE_ENV = "SHAPCA_WATCH_SECONDS", "SHAPCA_CANCEL_GRACE_SECONDS"
DEFAULT_INTERVAL_S, DEFAULT_GRACE_S = 10.0, 30.0
# At most this long to mark the MLflow run KILLED before the process ends: the MLflow client's own retry budget
# (prefect.yaml, about 8 minutes), so that an MLflow outage at that moment delays the exit instead of leaving the run
# RUNNING. Meanwhile the training makes no progress: it waits on MLflow too.
STOP_BUDGET_S = 600.0


class AttemptWatch:
    def __init__(
        self,
        flow_run_id: str,
        output_dir: Path,
        interval_s: float,
        grace_s: float,
        flow_run_name: str = "",
        flow_name: str = "",
    ):
        # Prefect's flow-run logger sends a record naming the flow run to its logs, from this thread too.
        self.log = logging.LoggerAdapter(
            logging.getLogger("prefect.flow_runs"),
            {"flow_run_id": flow_run_id, "flow_run_name": flow_run_name, "flow_name": flow_name},
        )
        self.flow_run_id = flow_run_id
        self.output_dir = Path(output_dir)
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.run_count: int | None = None  # this attempt's, read from the API while the flow run is Running
        self.cancelling_since: float | None = None
        self.unreachable = False
        self.done = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._loop, name="attempt-watch", daemon=True).start()

    def _loop(self) -> None:
        while not self.done.wait(self.interval_s):
            try:
                with get_client(sync_client=True) as client:
                    run = client.read_flow_run(UUID(self.flow_run_id))
            except Exception as exc:
                if not self.unreachable:
                    self.log.warning("Prefect API unreachable (%s): the watch resumes when it answers", exc)
                self.unreachable = True
                continue
            if self.unreachable:
                self.log.info("Prefect API reachable again: this attempt watches for cancellation again")
                self.unreachable = False
            if not self.done.is_set():
                self.check(run.state.type if run.state else None, run.run_count)

    def check(self, state: StateType | None, run_count: int) -> None:
        if state == StateType.RUNNING and (self.run_count is None or run_count == self.run_count):
            self.run_count = run_count
            self.cancelling_since = None
            return
        if state == StateType.CANCELLING:
            self.cancelling_since = self.cancelling_since or time.monotonic()
            if time.monotonic() - self.cancelling_since >= self.grace_s:
                self.stop(
                    f"the flow run has been Cancelling for {self.grace_s:.0f} s and its worker did not stop it (its "
                    "cancellation observer may have given up during a Prefect API outage): cancelling it here",
                    cancel=True,
                )
            return
        owner = f"attempt {run_count}" if run_count != self.run_count else "no attempt"
        self.stop(
            f"this attempt ({self.run_count}) no longer owns its flow run (state {state}, {owner} running it): "
            "stopping, so that two attempts never train at once; a retry resumes from the shared checkpoint",
            cancel=False,
        )

    def stop(self, why: str, cancel: bool) -> None:
        self.log.warning(why)
        finished = threading.Event()

        def wind_down() -> None:
            if cancel:  # first: what the orchestrator and its user wait for
                try:
                    with get_client(sync_client=True) as client:
                        client.set_flow_run_state(
                            self.flow_run_id, Cancelled(message="Cancelled by the attempt itself: " + why)
                        )
                except Exception as exc:
                    self.log.warning("could not set the flow run Cancelled: %s", exc)
            try:
                mark_interrupted(self.output_dir)
            except Exception as exc:
                self.log.warning("could not mark the MLflow run KILLED: %s", exc)
            finished.set()

        threading.Thread(target=wind_down, name="attempt-wind-down", daemon=True).start()
        finished.wait(STOP_BUDGET_S)
        with contextlib.suppress(Exception):
            APILogWorker.drain_all(timeout=5)  # this attempt's last lines reach the flow run's logs
        os._exit(0)


@contextlib.contextmanager
def watch_this_attempt(output_dir: Path) -> Iterator[None]:
    """Watch the current flow run while the block runs, when it belongs to a deployment (a worker started it)."""
    if not flow_run.id or not deployment.id:
        yield
        return
    watch = AttemptWatch(
        flow_run.id,
        output_dir,
        interval_s=float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S)),
        grace_s=float(os.environ.get(GRACE_ENV, DEFAULT_GRACE_S)),
        flow_run_name=flow_run.name or "",
        flow_name=flow_run.flow_name or "",
    )
    watch.start()
    try:
        yield
    finally:
        watch.done.set()
