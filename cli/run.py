"""`shapca run`: the whole pipeline (the train-shapca flow) in this process, with no server to start.

Prefect runs it against a temporary local server when no PREFECT_API_URL is set. Paths in the config (data/,
outputs/, .cache/) and the MLflow store (mlruns/) resolve against the project root, whatever the working directory.

The temporary server gets EPHEMERAL_STARTUP_TIMEOUT_S to come up instead of Prefect's 20 s: on a first run it also
creates and migrates its database (~/.prefect/prefect.db), which on a 2-core machine takes about that long by itself.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Annotated

import typer

EPHEMERAL_STARTUP_TIMEOUT_S = 180


def run(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="experiment YAML; default: configs/default.yaml")
    ] = None,
    override: Annotated[
        list[str] | None, typer.Option("--override", "-o", help="section.field=value, repeatable (train.epochs=1)")
    ] = None,
) -> None:
    """Validate the data, import the contexts, train and test, register and promote; print what came out."""
    from components.common.project_root import find_project_root
    from components.config import load_config

    root = find_project_root()
    config_path = (config or root / "configs" / "default.yaml").resolve()
    cfg = load_config(config_path, override or [])
    temporary_server_settings()
    with contextlib.chdir(root):
        # Prefect (and the flow's imports) only once the config is known to be valid.
        from flows.train_shapca import train_shapca

        outcome = train_shapca(config=cfg)
    typer.echo(outcome.text())


def temporary_server_settings() -> None:
    """Settings of the temporary Prefect server a command starts when PREFECT_API_URL names none; call before Prefect
    is imported (its settings read them then). A value the user set wins. Without analytics the temporary server
    writes no telemetry row while its first migration still holds the new database's lock."""
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(EPHEMERAL_STARTUP_TIMEOUT_S))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def add_commands(app: typer.Typer) -> None:
    app.command("run", epilog="Example: shapca run -o train.epochs=1")(run)
