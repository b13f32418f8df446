"""Model registry: register each trained model as a version of ``shapca-<dataset>`` and decide who is champion.

Rules
-----
- Every registered version gets the alias ``challenger`` (the newest candidate).
- A version becomes ``champion`` only when its dev metric beats the current champion's by at least ``min_delta``:
  ``candidate > champion and candidate - champion >= min_delta`` (a tie never moves the alias). The first version
  with a valid metric becomes champion. A version that is promoted loses ``challenger``; the version it replaces is
  tagged ``promotion=retired``.
- A failed or partial evaluation never moves champion: a missing, NaN or infinite metric, or a version tagged
  ``evaluation`` with anything but ``complete``. Neither does a champion whose own metric cannot be read (compare by
  hand and move the alias explicitly).
- Every decision is written on the version: ``promotion`` (champion | challenger) and ``promotion_reason`` (why).

Check-and-set
-------------
MLflow has no compare-and-swap for aliases, so a promotion is a critical section under an exclusive file lock
(``filelock``): read the champion and its metric, decide, set the alias, then read the alias back and fail loudly
(:class:`PromotionConflict`) if it is not what was just written. Two promoters racing therefore serialise, and the
second one compares against the first one's result, so the alias can never end on the worse model.

Guarantee and limits: the lock is a file, so it serialises every promoter on one machine that uses the same registry
(for a sqlite store it sits next to the database file, ``<db>.registry.lock``, and so also covers processes that reach
the database over a shared filesystem with working locks; for any other URI it lives in the system temp dir, keyed by
the URI). It cannot serialise promoters on different hosts talking to one tracking server, nor someone moving the
alias by hand in the UI; the read-back only detects the latter after the fact. With several hosts, run promotions from
one place (a single Prefect deployment with a concurrency limit of 1, or a CI job) or pass ``lock_path`` on a shared
filesystem that supports ``flock``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.tracking.mlflow_setup import sqlite_path

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_EVALUATION = "evaluation"  # complete | partial | failed
TAG_PROMOTION = "promotion"  # champion | challenger | retired
TAG_REASON = "promotion_reason"
TAG_COMPARED_TO = "promotion_compared_to"  # the champion version the decision was made against
EVALUATION_COMPLETE = "complete"
LOCK_TIMEOUT_S = 120.0


class PromotionConflict(RuntimeError):
    """The champion alias did not hold the value just written: someone moved it without taking the lock."""


def registered_model_name(dataset: str) -> str:
    return f"shapca-{dataset}"


def metric_tag(metric_name: str) -> str:
    """The model-version tag that holds a dev metric, e.g. ``metric.dev_f1``."""
    return f"metric.{metric_name}"


@dataclass(frozen=True)
class PromotionDecision:
    version: str
    alias: str  # CHAMPION or CHALLENGER: what the version holds after the decision
    reason: str
    previous_champion: str | None  # the version that was champion when the decision was taken
    dev_metric: float | None
    champion_metric: float | None

    @property
    def promoted(self) -> bool:
        return self.alias == CHAMPION and self.previous_champion != self.version


# ---------------------------------------------------------------------------------------------------------------------
# Locking


def registry_lock_path(client) -> Path:
    """Where the promotion lock of this client's registry lives (see the module docstring)."""
    # MlflowClient keeps the registry URI it resolved (defaulting to the tracking URI) in `_registry_uri`.
    uri = getattr(client, "_registry_uri", None) or client.tracking_uri
    db = sqlite_path(uri)
    if db is not None:
        return db.resolve().with_name(db.name + ".registry.lock")
    key = hashlib.sha256(uri.encode("utf-8")).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"shapca-registry-{key}.lock"


@contextlib.contextmanager
def _exclusive(lock_path: Path, timeout: float):
    from filelock import FileLock, Timeout

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(lock_path), timeout=timeout):
            yield
    except Timeout as exc:
        raise TimeoutError(
            f"registry lock {lock_path} held by another promotion for more than {timeout:.0f}s; "
            "if no promotion is running, the holder died: delete the file and retry"
        ) from exc


# ---------------------------------------------------------------------------------------------------------------------
# Reading the registry


def _is_not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def aliases(client, model_name: str) -> dict[str, str]:
    """``{alias: version}`` of a registered model, read fresh from the store."""
    return {alias: str(version) for alias, version in client.get_registered_model(model_name).aliases.items()}


def champion_version(client, model_name: str) -> str | None:
    return aliases(client, model_name).get(CHAMPION)


def _parse_metric(raw: Any) -> float | None:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def version_dev_metric(client, model_name: str, version: str, metric_name: str) -> float | None:
    """The version's dev metric, read where MLflow 3 keeps it: the metric ``metric_name`` of the version's LoggedModel
    (``client.get_logged_model(<model id>).metrics``, linked by the training run). For a version without one (one
    registered from an artifact URI, or a model whose run linked no metrics): its ``metric.<name>`` tag, else the
    metric of the run that produced it. None when none exists or the value is not a finite number."""
    model_version = client.get_model_version(model_name, str(version))
    # The sqlite registry does not keep ModelVersion.model_id: a version of a LoggedModel has source models:/m-<id>.
    source = re.fullmatch(r"models:/(m-[0-9a-f]+)", model_version.source or "")
    model_id = getattr(model_version, "model_id", None) or (source.group(1) if source else None)
    if model_id:
        try:
            logged = [m for m in client.get_logged_model(model_id).metrics or [] if m.key == metric_name]
        except Exception as exc:  # a deleted model: fall back to what the version and its run recorded
            if not _is_not_found(exc):
                raise
            logged = []
        if logged:
            return _parse_metric(max(logged, key=lambda m: m.timestamp).value)
    tag = model_version.tags.get(metric_tag(metric_name))
    if tag is not None:
        return _parse_metric(tag)
    if model_version.run_id:
        try:
            run = client.get_run(model_version.run_id)
        except Exception as exc:  # a deleted run: the metric is simply unknown
            if _is_not_found(exc):
                return None
            raise
        return _parse_metric(run.data.metrics.get(metric_name))
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Registering


def _ensure_registered_model(client, model_name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(model_name)
    except MlflowException as exc:
        # Already there (maybe created by a concurrent trainer a moment ago): that is what we wanted.
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def _version_of(client, model_name: str, model_uri: str, run_id: str | None) -> str | None:
    """The version already registered from exactly this model (same source, same run), if any."""
    if run_id is None:
        return None
    for found in client.search_model_versions(f"name='{model_name}' and run_id='{run_id}'"):
        if found.source == model_uri or getattr(found, "model_id", None) == model_uri.removeprefix("models:/"):
            return str(found.version)
    return None


def register_version(
    client,
    model_name: str,
    model_uri: str,
    run_id: str | None = None,
    dev_metric: float | None = None,
    metric_name: str = "dev_f1",
    evaluation: str = EVALUATION_COMPLETE,
    tags: dict[str, str] | None = None,
    lock_path: str | Path | None = None,
) -> str:
    """Register ``model_uri`` as a new version, tag its dev metric and evaluation status, give it ``challenger``.

    ``model_uri`` is what ``mlflow.pyfunc.log_model(...).model_uri`` returns (``models:/m-<id>``; its run is looked
    up) or any artifact URI of a run (then pass ``run_id``). Returns the new version number as a string.
    """
    logged_model_id = None
    match = re.fullmatch(r"models:/(m-[0-9a-f]+)", model_uri)
    if match:
        logged_model_id = match.group(1)
        run_id = run_id or client.get_logged_model(logged_model_id).source_run_id
    version_tags = {TAG_EVALUATION: evaluation, **(tags or {})}
    if dev_metric is not None:
        version_tags[metric_tag(metric_name)] = repr(float(dev_metric))

    _ensure_registered_model(client, model_name)
    existing = _version_of(client, model_name, model_uri, run_id)
    if existing is not None:
        # A retried pipeline registers the same model again: reuse its version instead of adding a duplicate.
        return existing
    created = client.create_model_version(
        model_name, source=model_uri, run_id=run_id, tags=version_tags, model_id=logged_model_id
    )
    version = str(created.version)
    with _exclusive(Path(lock_path) if lock_path else registry_lock_path(client), LOCK_TIMEOUT_S):
        client.set_registered_model_alias(model_name, CHALLENGER, version)
    return version


# ---------------------------------------------------------------------------------------------------------------------
# Promoting


def _decide(
    version: str,
    evaluation: str,
    candidate: float | None,
    champion: str | None,
    champion_metric: float | None,
    metric_name: str,
    min_delta: float,
) -> tuple[bool, str]:
    """(promote?, why) from what was read under the lock."""
    if champion == version:
        # Re-deciding for the champion itself (a retry, a re-evaluation) never demotes it: that takes a better model.
        return True, f"already champion ({metric_name}={candidate})"
    if evaluation != EVALUATION_COMPLETE:
        return False, f"evaluation is {evaluation!r}, not 'complete': a failed or partial evaluation never promotes"
    if candidate is None:
        return False, f"no finite {metric_name}: a failed or partial evaluation never promotes"
    if champion is None:
        return True, f"first version with a valid {metric_name} ({candidate:.6g}) becomes champion"
    if champion_metric is None:
        return False, (
            f"champion v{champion} has no finite {metric_name} to compare against; "
            "compare by hand and set the alias explicitly"
        )
    gain = candidate - champion_metric
    if candidate > champion_metric and gain >= min_delta:
        return True, (
            f"{metric_name} {candidate:.6g} beats champion v{champion} ({champion_metric:.6g}) by {gain:.6g} "
            f">= min_delta {min_delta:g}"
        )
    return False, (
        f"{metric_name} {candidate:.6g} does not beat champion v{champion} ({champion_metric:.6g}) by min_delta "
        f"{min_delta:g} (gain {gain:.6g})"
    )


def promote(
    client,
    model_name: str,
    version: str | int,
    dev_metric: float | None = None,
    metric_name: str = "dev_f1",
    min_delta: float = 0.0,
    lock_path: str | Path | None = None,
    lock: contextlib.AbstractContextManager | None = None,
) -> PromotionDecision:
    """Decide whether ``version`` becomes champion, and apply the decision atomically (check-and-set under a lock).

    ``dev_metric`` given: it is recorded on the version first (tag ``metric.<metric_name>``); None: the stored tag or
    the run's metric is used. ``lock`` replaces the file lock with any context manager (``contextlib.nullcontext()``
    disables it: only to demonstrate the race it prevents).
    """
    version = str(version)
    if min_delta < 0 or not math.isfinite(min_delta):
        raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
    # Fails early (RESOURCE_DOES_NOT_EXIST) for a version that is not registered.
    client.get_model_version(model_name, version)
    critical = lock if lock is not None else _exclusive(
        Path(lock_path) if lock_path else registry_lock_path(client), LOCK_TIMEOUT_S
    )
    with critical:
        if dev_metric is not None:
            client.set_model_version_tag(model_name, version, metric_tag(metric_name), repr(float(dev_metric)))
        # Everything the decision rests on is read inside the critical section.
        model_version = client.get_model_version(model_name, version)
        evaluation = model_version.tags.get(TAG_EVALUATION, EVALUATION_COMPLETE)
        candidate = version_dev_metric(client, model_name, version, metric_name)
        current = aliases(client, model_name)
        champion = current.get(CHAMPION)
        champion_metric = (
            version_dev_metric(client, model_name, champion, metric_name) if champion not in (None, version) else None
        )
        promoted, reason = _decide(version, evaluation, candidate, champion, champion_metric, metric_name, min_delta)

        if promoted:
            if champion != version:
                client.set_registered_model_alias(model_name, CHAMPION, version)
            if current.get(CHALLENGER) == version:
                client.delete_registered_model_alias(model_name, CHALLENGER)
            after = aliases(client, model_name)
            if after.get(CHAMPION) != version:
                raise PromotionConflict(
                    f"{model_name}: champion is v{after.get(CHAMPION)} right after setting it to v{version}; "
                    "something moves the alias without the registry lock"
                )
            if champion not in (None, version):
                client.set_model_version_tag(model_name, champion, TAG_PROMOTION, "retired")
                client.set_model_version_tag(model_name, champion, TAG_REASON, f"replaced by v{version}: {reason}")
        elif current.get(CHALLENGER) != version:
            client.set_registered_model_alias(model_name, CHALLENGER, version)

        alias = CHAMPION if promoted else CHALLENGER
        client.set_model_version_tag(model_name, version, TAG_PROMOTION, alias)
        client.set_model_version_tag(model_name, version, TAG_REASON, reason)
        client.set_model_version_tag(model_name, version, TAG_COMPARED_TO, champion or "none")
    return PromotionDecision(version, alias, reason, champion, candidate, champion_metric)
