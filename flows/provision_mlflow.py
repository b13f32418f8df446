"""Provision the MLflow tracking server's users and grants, idempotently (roles: components/access/mlflow_access.py).

    export MLFLOW_TRACKING_URI=http://127.0.0.1:5000
    export MLFLOW_TRACKING_USERNAME=<operator> MLFLOW_TRACKING_PASSWORD=...         # the server's admin user
    export SHAPCA_MLFLOW_TRAINER_USERNAME=... SHAPCA_MLFLOW_TRAINER_PASSWORD=...    # and CONSUMER (required),
    python -m flows.provision_mlflow                                               # WATCHER (optional)

Creates the role users (or sets their passwords to the environment's), the roles `shapca-trainer`,
`shapca-consumer` and `shapca-watcher` with exactly their grants, the experiments the pipeline writes to and the
registered models `shapca-<dataset>` with their promotion locks (a trainer may not create them). No Prefect here: the
operator runs it next to `python -m flows.provision`, against the MLflow server only.
"""

from __future__ import annotations

import argparse
import os

from components.access.mlflow_access import provision_mlflow_access, users_from_env


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not tracking_uri.startswith(("http://", "https://")):
        raise SystemExit(f"MLFLOW_TRACKING_URI={tracking_uri!r}: expected the tracking server's http(s) URL")
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        if not os.environ.get(key):
            raise SystemExit(f"set {key}: provisioning runs as the server's admin user (the operator)")
    try:
        users = users_from_env()
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    for line in provision_mlflow_access(tracking_uri, users):
        print(line)


if __name__ == "__main__":
    main()
