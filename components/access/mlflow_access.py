"""MLflow access: the roles of the production topology and their idempotent provisioning.

The tracking server runs MLflow's `basic-auth` app with workspaces on (`MLFLOW_ENABLE_WORKSPACES=true`) and
`default_permission = NO_PERMISSIONS` (infra/mlflow/basic_auth.ini): a request without credentials gets 401, a user
gets exactly what a role grants, and only an admin creates experiments or registered models (MLflow allows a create
only to holders of a workspace grant, which no role here has). That matters because MLflow grants the creator of an
experiment or a registered model MANAGE on it: a trainer that created `shapca-<dataset>` could delete it and grant
others rights on it. So this module creates them, as the operator.

What each role is granted, per resource type, on every resource of that type (`*`; sub-resources without a grant
inherit their container's):

- operator: the server's admin user (MLFLOW_AUTH_ADMIN_USERNAME); administers users and grants, creates experiments
  and registered models (this module, run by `python -m flows.provision_mlflow`);
- trainer (the workers): EDIT on experiments and registered models: runs, metrics, artifacts, logged models, model
  versions, aliases, tags and descriptions. Not DELETE (no run, version, alias or model is removed) and not MANAGE
  (no permission changes): promotion is built for exactly this (components/tracking/registry.py);
- consumer: READ on registered models and on experiments (a version's artifacts live in its experiment: MLflow's
  artifact proxy checks READ there), DENY on runs: loads `models:/...@champion`, reads versions, aliases, tags and the
  logged model's metrics, and not the training runs (parameters, metrics, artifacts of runs);
- watcher (optional): READ on experiments and registered models.

Credentials come from the environment only: the operator's own as MLflow's client reads them
(MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD), and for each role `SHAPCA_MLFLOW_<ROLE>_USERNAME` and
`SHAPCA_MLFLOW_<ROLE>_PASSWORD` (trainer and consumer required; watcher when both are set). Nothing here has a default
user name or password. Running it again converges: it creates what is missing, sets each user's password to the one in
the environment (rotation), takes admin rights away from role users, and makes each role's grants exactly the table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import get_args

from components.config import TrackingConfig
from components.datasets import DatasetName
from components.tracking.registry import ensure_registered_model, lock_name, registered_model_name
from components.validation.data_docs import DEFAULT_EXPERIMENT as VALIDATION_EXPERIMENT

WORKSPACE = "default"  # where grants live while the server has one workspace (MLflow's default)
ROLE_PREFIX = "shapca-"


@dataclass(frozen=True)
class Grant:
    resource_type: str  # an MLflow auth resource type: experiment, registered_model, run, ...
    pattern: str  # "*" (every resource of the type) or one resource's id or name
    permission: str  # READ, USE, EDIT, MANAGE or DENY


ROLES: dict[str, tuple[Grant, ...]] = {
    "trainer": (Grant("experiment", "*", "EDIT"), Grant("registered_model", "*", "EDIT")),
    "consumer": (
        Grant("registered_model", "*", "READ"),
        Grant("experiment", "*", "READ"),
        Grant("run", "*", "DENY"),
    ),
    "watcher": (Grant("experiment", "*", "READ"), Grant("registered_model", "*", "READ")),
}
REQUIRED_ROLES = ("trainer", "consumer")
# What the pipeline writes to: the training runs' experiment (tracking.experiment's default) and the data validation's.
EXPERIMENTS = (TrackingConfig().experiment, VALIDATION_EXPERIMENT)


def registered_models() -> list[str]:
    """Every registered model the pipeline writes: `shapca-<dataset>` and its promotion lock, for each dataset."""
    names = [registered_model_name(dataset) for dataset in get_args(DatasetName)]
    return [name for model in names for name in (model, lock_name(model))]


@dataclass(frozen=True)
class User:
    role: str
    username: str
    password: str


def users_from_env(env: Mapping[str, str] | None = None) -> list[User]:
    """The role users to provision, from `SHAPCA_MLFLOW_<ROLE>_USERNAME` / `_PASSWORD`; a clear error naming what
    is missing (a required role, or half of an optional one)."""
    env = os.environ if env is None else env
    users, missing = [], []
    for role in ROLES:
        keys = (f"SHAPCA_MLFLOW_{role.upper()}_USERNAME", f"SHAPCA_MLFLOW_{role.upper()}_PASSWORD")
        values = [env.get(key, "").strip() for key in keys]
        if all(values):
            users.append(User(role, *values))
        elif role in REQUIRED_ROLES or any(values):
            missing += [key for key, value in zip(keys, values, strict=True) if not value]
    if missing:
        raise ValueError(
            f"set {', '.join(missing)} in the environment: the MLflow user of each role (trainer and consumer "
            "required, watcher optional) comes from there, never from a default"
        )
    for user in users:
        if len(user.password) < 12:
            raise ValueError(f"SHAPCA_MLFLOW_{user.role.upper()}_PASSWORD: MLflow needs at least 12 characters")
    return users


def _converge_user(auth, user: User) -> str:
    from mlflow.exceptions import MlflowException

    try:
        auth.create_user(user.username, user.password)
        state = "created"
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
        auth.update_user_password(user.username, user.password)
        state = "exists, password set"
    if auth.get_user(user.username).is_admin:
        auth.update_user_admin(user.username, False)
        state += ", admin rights removed"
    return state


def _converge_role(auth, role: str, grants: tuple[Grant, ...]) -> int:
    """The role `shapca-<role>` with exactly `grants`; returns its id."""
    name = ROLE_PREFIX + role
    existing = {r.name: r for r in auth.list_roles(WORKSPACE)}
    role_id = (
        existing[name].id
        if name in existing
        else auth.create_role(WORKSPACE, name, description=f"shapca-ops {role} (components/access/mlflow_access.py)").id
    )
    wanted = {(g.resource_type, g.pattern): g.permission for g in grants}
    for held in auth.list_role_permissions(role_id):
        key = (held.resource_type, held.resource_pattern)
        if key not in wanted:
            auth.remove_role_permission(held.id)
        elif (permission := wanted.pop(key)) != held.permission:
            auth.update_role_permission(held.id, permission)
    for (resource_type, pattern), permission in wanted.items():
        auth.add_role_permission(role_id, resource_type, pattern, permission)
    return role_id


def provision_mlflow_access(tracking_uri: str, users: list[User]) -> list[str]:
    """Converge the server at `tracking_uri` on the table above; run as the operator (an MLflow admin). Returns one
    line per object, saying what it did."""
    from mlflow import MlflowClient
    from mlflow.server.auth.client import AuthServiceClient

    auth = AuthServiceClient(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    lines = []
    for user in users:
        lines.append(f"mlflow user {user.username} ({user.role}): {_converge_user(auth, user)}")
        role_id = _converge_role(auth, user.role, ROLES[user.role])
        if ROLE_PREFIX + user.role not in {r.name for r in auth.list_user_roles(user.username)}:
            auth.assign_role(user.username, role_id)
        grants = ", ".join(f"{g.resource_type} {g.pattern} {g.permission}" for g in ROLES[user.role])
        lines.append(f"mlflow role {ROLE_PREFIX}{user.role}: {grants}")
    for name in EXPERIMENTS:
        if client.get_experiment_by_name(name) is None:
            client.create_experiment(name)
            lines.append(f"mlflow experiment {name}: created")
        else:
            lines.append(f"mlflow experiment {name}: exists")
    for name in registered_models():
        created = ensure_registered_model(client, name)
        lines.append(f"mlflow registered model {name}: {'created' if created else 'exists'}")
    return lines
