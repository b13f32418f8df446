"""Where MLflow records runs: tracking URI resolution and experiment creation with an explicit artifact location.

Resolution, first match wins:

1. ``MLFLOW_TRACKING_URI`` from the environment (a server ``http://127.0.0.1:5000``, a database, ...);
2. the embedded default ``sqlite:///<project_root>/mlruns/mlflow.db``, artifacts in ``<project_root>/mlruns/artifacts``.

MLflow's plain-file store (``./mlruns`` directories, ``file:`` URIs) is in maintenance mode and refuses to start, so a
file-store URI is rejected here with a message that says what to use instead.

The project root is found by components/common/project_root.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from components.common.project_root import find_project_root

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


def default_tracking_uri(project_root: Path) -> str:
    # Four slashes: sqlite:/// followed by an absolute path.
    return f"sqlite:///{(project_root / 'mlruns' / 'mlflow.db').resolve().as_posix()}"


def _check_not_file_store(uri: str) -> None:
    scheme = urlparse(uri).scheme
    # A bare path (no scheme) or a Windows drive letter is what MLflow takes as a file store too.
    if scheme in ("", "file") or len(scheme) == 1:
        raise ValueError(
            f"{TRACKING_URI_ENV}={uri!r} points at MLflow's file store, which is in maintenance mode and refuses to "
            "start; use a database URI such as 'sqlite:////abs/path/mlflow.db' or a tracking server "
            "'http://127.0.0.1:5000' (or unset it for the project's sqlite default)"
        )


def resolve_tracking_uri(project_root: str | Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the project's sqlite store (its ``mlruns/`` directory is created)."""
    from_env = os.environ.get(TRACKING_URI_ENV, "").strip()
    if from_env:
        _check_not_file_store(from_env)
        return from_env
    root = find_project_root(project_root)
    (root / "mlruns").mkdir(parents=True, exist_ok=True)
    return default_tracking_uri(root)


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file behind a ``sqlite:///`` URI; None for any other store."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = tracking_uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def default_artifact_location(tracking_uri: str) -> str | None:
    """``<dir of the db>/artifacts`` as a ``file://`` URI for a sqlite store; None (the server decides) otherwise.

    For the embedded default this is ``<project_root>/mlruns/artifacts``.
    """
    db = sqlite_path(tracking_uri)
    if db is None:
        return None
    return (db.resolve().parent / "artifacts").as_uri()


@dataclass(frozen=True)
class TrackingSetup:
    tracking_uri: str
    experiment_name: str
    experiment_id: str
    artifact_location: str  # as recorded on the experiment (an existing experiment keeps its own)


def setup_tracking(
    experiment_name: str,
    project_root: str | Path | None = None,
    tracking_uri: str | None = None,
    artifact_location: str | None = None,
) -> TrackingSetup:
    """Point MLflow at the resolved store and get or create the experiment; safe when several processes race.

    ``tracking_uri`` and ``artifact_location`` override the resolution (tests pass a sqlite store in tmp_path).
    Sets the process-wide tracking and registry URIs, so ``mlflow.start_run`` and ``MlflowClient()`` use them.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = tracking_uri or resolve_tracking_uri(project_root)
    _check_not_file_store(uri)
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        location = artifact_location or default_artifact_location(uri)
        try:
            client.create_experiment(experiment_name, artifact_location=location)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") == "PERMISSION_DENIED":
                raise RuntimeError(
                    f"MLflow at {uri} refused to create the experiment {experiment_name!r} for this user: with "
                    "authentication on, only the operator creates experiments (`python -m flows.provision_mlflow` "
                    "makes the pipeline's); use an existing one or ask the operator"
                ) from exc
            # Another process created it between our lookup and create: use theirs. Anything else re-raises below.
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            raise RuntimeError(f"could not create or find MLflow experiment {experiment_name!r} in {uri}")
    if experiment.lifecycle_stage != "active":
        raise RuntimeError(
            f"MLflow experiment {experiment_name!r} in {uri} is deleted; restore it "
            f"(`mlflow experiments restore --experiment-id {experiment.experiment_id}`) or pick another name"
        )
    return TrackingSetup(uri, experiment_name, experiment.experiment_id, experiment.artifact_location)
