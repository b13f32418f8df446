"""The output directory of one training, and the MLflow run it belongs to: who may use it, and what `--resume` may do.

`<output_dir>/mlflow_run_id` names the run that last trained there. Before a training starts (rank 0, before its
MLflow run is opened, so a refusal changes no run's status):

- the directory is claimed with an exclusive lock (`.training.lock`): a second training in the same directory on the
  same host fails at once with a clear message instead of sharing `best/`, `last/` and the run id;
- `--resume` refuses a run that already FINISHED (resuming would log a second model and a second test score into it)
  and a checkpoint written by another config (it would mix two trainings); it continues a run that was interrupted
  (RUNNING after a kill, FAILED, KILLED);
- without `--resume`, a previous run still RUNNING was killed (the lock proves nobody trains here now): it is marked
  KILLED, with a WARNING, so that it does not stay RUNNING forever.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from components.config import ExperimentConfig, config_hash
from components.training.checkpoint import checkpoint_config_hash

log = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow_run_id"
LOCK_FILE = ".training.lock"


class ResumeRefused(ValueError):
    """`--resume` would corrupt a finished run or mix two configs."""


@contextlib.contextmanager
def claim_output_dir(out_dir: Path):
    from filelock import FileLock, Timeout

    out_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out_dir / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise RuntimeError(
            f"{out_dir} is in use by another training on this host; wait for it, or give this one its own "
            "train.output_dir"
        ) from None
    try:
        yield
    finally:
        lock.release()


def previous_run_id(out_dir: Path) -> str | None:
    path = out_dir / RUN_ID_FILE
    return path.read_text().strip() or None if path.is_file() else None


def run_to_continue(client, cfg: ExperimentConfig, out_dir: Path, resume: bool) -> str | None:
    """The run id a resumed training continues (None: start a new run); see the module docstring for the rules."""
    run_id = previous_run_id(out_dir)
    run = None
    if run_id is not None:
        try:
            run = client.get_run(run_id)
        except Exception as exc:  # deleted or from another store: nothing to continue or to mark
            if getattr(exc, "error_code", "") not in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
                raise
    if not resume:
        if run is not None and run.info.status == "RUNNING":
            log.warning(
                "run %s in %s is still RUNNING but its training is gone (killed): marking it KILLED", run_id, out_dir
            )
            client.set_terminated(run_id, status="KILLED")
        return None
    written_for = checkpoint_config_hash(out_dir / "checkpoints")
    if written_for is not None and written_for != config_hash(cfg):
        raise ResumeRefused(
            f"--resume: the checkpoint in {out_dir / 'checkpoints'} was written by another config (hash "
            f"{written_for}, this config {config_hash(cfg)}); resuming would mix two trainings: drop --resume or "
            "use the config it was trained with"
        )
    if run is None:
        return None
    if run.info.status == "FINISHED":
        raise ResumeRefused(
            f"--resume: run {run_id} in {out_dir} already FINISHED (its model and test scores are logged); there is "
            "nothing to resume: train without --resume for a new run"
        )
    return run_id


def mark_interrupted(out_dir: Path, client=None) -> str | None:
    """The training in `out_dir` is being stopped from outside (cancelled, or superseded by another attempt): mark
    its MLflow run KILLED if it is still RUNNING, so that no run is left RUNNING. A retry continues a KILLED run.
    Returns the run id (None: no run started yet)."""
    run_id = previous_run_id(Path(out_dir))
    if run_id is None:
        return None
    if client is None:
        from mlflow import MlflowClient

        from components.tracking.mlflow_setup import resolve_tracking_uri

        client = MlflowClient(resolve_tracking_uri())
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, status="KILLED")
        log.warning("run %s in %s marked KILLED: its training was stopped", run_id, out_dir)
    return run_id
