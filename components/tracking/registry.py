"""Model registry: register each trained model as a version of ``shapca-<dataset>`` and decide who is champion.

Rules
-----
- Every registered version gets the alias ``challenger`` (the newest candidate).
- A version becomes ``champion`` only when all of these hold (checked in this order; the first that fails is the
  refusal, written on the version as ``promotion_check=<code>`` and ``promotion_reason=<why>``):

  ============================  =====================================================================================
  ``evaluation_incomplete``     the version's ``evaluation`` tag is ``complete`` (a missing tag is NOT complete: a
                                hand-registered version must say so explicitly)
  ``run_not_finished``          the run that produced it is FINISHED (not FAILED, KILLED, RUNNING, deleted, absent)
  ``no_metric``                 its dev metric is a finite number
  ``evaluation_unrecorded``     its run records the dataset (``data.dataset``), the dev split size
                                (``data.dev_size``) and the data version (``lineage.data_version``)
  ``partial_dev_split``         the dev split was not capped (no ``data.max_examples.dev``), unless the caller allows
                                capped splits (``allow_partial_dev``: quick runs, tests); even then it is compared
                                only with a champion scored on the identical split
  ``below_floor``               its metric is at least the optional quality floor ``min_metric``
  ``champion_unreadable``       (a champion exists) the champion's metric is finite
  ``not_comparable``            the champion was scored on the same dataset, the same dev split (size and cap) and
                                the same data version
  ``below_min_delta``           ``candidate > champion and candidate - champion >= min_delta`` (a tie never moves it)
  ============================  =====================================================================================

  The first version that passes the checks before ``champion_unreadable`` becomes champion. A version that is
  promoted loses ``challenger``; the version it replaces is tagged ``promotion=retired``.
- ``min_delta`` defaults to :data:`DEFAULT_MIN_DELTA`, ``tracking.min_delta``'s default (components/config.py says
  why it is one F1 point).

Check-and-set, across hosts
---------------------------
MLflow has no compare-and-swap for aliases, so a promotion is a critical section under a lock that lives in the
registry itself: the registered model ``<name>.promotion-lock``. ``create_registered_model`` is an atomic
create-if-absent on every MLflow store (a unique name; the REST server answers RESOURCE_ALREADY_EXISTS), so exactly
one promoter creates it, on whichever host, whatever spelling of the tracking URI it uses. Its tags say who holds it
(``holder`` = host:pid:nonce) and since when; releasing deletes it (only by its holder). A lock older than
``LOCK_STALE_S`` (a promotion takes seconds) is from a dead promoter and is broken with a WARNING log line.

Inside the lock: read the champion and its metric, decide, set the alias, then read the alias back and fail loudly
(:class:`PromotionConflict`) if it is not what was just written. Two promoters racing therefore serialise, and the
second one compares against the first one's result, so the alias can never end on the worse model. The read-back
only detects, after the fact, someone who moves the alias by hand without the lock (the UI).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import re
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from components.config import TrackingConfig
from components.data.metrics import SELECTION_METRIC_KEY

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_EVALUATION = "evaluation"  # complete | partial | failed
TAG_PROMOTION = "promotion"  # champion | challenger | retired
TAG_REASON = "promotion_reason"
TAG_CHECK = "promotion_check"  # "passed" or the code of the rule that refused (see the module docstring)
TAG_COMPARED_TO = "promotion_compared_to"  # the champion version the decision was made against
EVALUATION_COMPLETE = "complete"
DEFAULT_MIN_DELTA: float = TrackingConfig.model_fields["min_delta"].default
LOCK_SUFFIX = ".promotion-lock"
LOCK_TIMEOUT_S = 120.0  # how long a promoter waits for the lock before giving up
LOCK_STALE_S = 900.0  # a lock this old belongs to a promoter that died: break it
# Run params the comparability checks read (written by components/runs/training_run.py).
PARAM_DATASET, PARAM_DEV_SIZE, PARAM_DEV_CAP = "data.dataset", "data.dev_size", "data.max_examples.dev"
PARAM_DATA_VERSION = "lineage.data_version"


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
    check: str = "passed"  # "passed" or the refusal code

    @property
    def promoted(self) -> bool:
        return self.alias == CHAMPION and self.previous_champion != self.version


# ---------------------------------------------------------------------------------------------------------------------
# Locking: a registered model as a mutex


def _error_code(exc: Exception) -> str:
    return getattr(exc, "error_code", "") or ""


def _is_not_found(exc: Exception) -> bool:
    return _error_code(exc) in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def _is_already_exists(exc: Exception) -> bool:
    return _error_code(exc) in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS")


def lock_name(model_name: str) -> str:
    return model_name + LOCK_SUFFIX


def _release(client, name: str, holder: str) -> None:
    """Delete the lock if it is still ours (a lock broken as stale and re-taken by another promoter is theirs)."""
    try:
        current = client.get_registered_model(name).tags.get("holder")
        if current != holder:
            log.warning("promotion lock %s is now held by %s, not by us (%s): leaving it", name, current, holder)
            return
        client.delete_registered_model(name)
    except Exception as exc:
        if not _is_not_found(exc):
            raise


@contextlib.contextmanager
def registry_lock(client, model_name: str, timeout: float = LOCK_TIMEOUT_S, stale_after: float = LOCK_STALE_S):
    """Hold ``<model_name>.promotion-lock`` (see the module docstring) for the block; TimeoutError after ``timeout``."""
    from mlflow.exceptions import MlflowException

    name = lock_name(model_name)
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.create_registered_model(
                name,
                tags={"holder": holder, "acquired_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                description=f"promotion lock of {model_name}: deleted when the promotion ends",
            )
            break
        except MlflowException as exc:
            if not _is_already_exists(exc):
                raise
        try:
            held = client.get_registered_model(name)
        except MlflowException as exc:
            if _is_not_found(exc):
                continue  # released between our create and this read: try again at once
            raise
        age = time.time() - held.creation_timestamp / 1000.0
        if age > stale_after:
            log.warning(
                "breaking stale promotion lock %s: held by %s since %s (%.0f s > %.0f s), its promoter died",
                name,
                held.tags.get("holder"),
                held.tags.get("acquired_at"),
                age,
                stale_after,
            )
            _release(client, name, held.tags.get("holder", ""))
            continue
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"promotion lock {name} held by {held.tags.get('holder')} since {held.tags.get('acquired_at')} for "
                f"more than {timeout:.0f}s; it is broken automatically after {stale_after:.0f}s, or delete the "
                f"registered model {name!r} by hand if no promotion is running"
            )
        time.sleep(0.05 + random.random() * 0.2)  # jitter: waiting promoters do not hammer the store in step
    try:
        yield
    finally:
        _release(client, name, holder)


# ---------------------------------------------------------------------------------------------------------------------
# Reading the registry


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


def _run_of(client, run_id: str | None):
    """The run, or None when there is none or it was deleted."""
    if not run_id:
        return None
    try:
        return client.get_run(run_id)
    except Exception as exc:
        if _is_not_found(exc):
            return None
        raise


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
    run = _run_of(client, model_version.run_id)
    return _parse_metric(run.data.metrics.get(metric_name)) if run is not None else None


@dataclass(frozen=True)
class EvaluationRecord:
    """What a version's dev metric was computed on, read from its run: two metrics compare only if these agree."""

    run_status: str  # FINISHED, FAILED, ..., or "absent" (no run, or deleted)
    dataset: str | None
    dev_size: str | None
    dev_cap: str | None  # data.max_examples.dev, None for the full split
    data_version: str | None

    @property
    def recorded(self) -> bool:
        return None not in (self.dataset, self.dev_size, self.data_version)

    def split(self) -> tuple:
        return (self.dataset, self.dev_size, self.dev_cap, self.data_version)

    def describe(self) -> str:
        cap = f"capped at {self.dev_cap}" if self.dev_cap else "full"
        return f"dataset {self.dataset}, dev split {self.dev_size} examples ({cap}), data version {self.data_version}"


def evaluation_record(client, run_id: str | None) -> EvaluationRecord:
    run = _run_of(client, run_id)
    if run is None or getattr(run.info, "lifecycle_stage", "active") == "deleted":
        return EvaluationRecord("absent", None, None, None, None)
    params = run.data.params
    return EvaluationRecord(
        run.info.status,
        params.get(PARAM_DATASET),
        params.get(PARAM_DEV_SIZE),
        params.get(PARAM_DEV_CAP),
        params.get(PARAM_DATA_VERSION),
    )


# ---------------------------------------------------------------------------------------------------------------------
# Registering


def _ensure_registered_model(client, model_name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(model_name)
    except MlflowException as exc:
        # Already there (maybe created by a concurrent trainer a moment ago): that is what we wanted.
        if not _is_already_exists(exc):
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
    metric_name: str = SELECTION_METRIC_KEY,
    evaluation: str = EVALUATION_COMPLETE,
    tags: dict[str, str] | None = None,
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
    with registry_lock(client, model_name):
        client.set_registered_model_alias(model_name, CHALLENGER, version)
    return version


# ---------------------------------------------------------------------------------------------------------------------
# Promoting


@dataclass(frozen=True)
class _Facts:
    """Everything a decision rests on, read inside the lock."""

    version: str
    evaluation: str | None
    candidate: float | None
    record: EvaluationRecord
    champion: str | None
    champion_metric: float | None
    champion_record: EvaluationRecord | None


def _decide(
    facts: _Facts, metric_name: str, min_delta: float, min_metric: float | None, allow_partial_dev: bool
) -> tuple[bool, str, str]:
    """(promote?, check code, why); the rules and their order are the module docstring's table."""
    f, m = facts, metric_name
    if f.champion == f.version:
        # Re-deciding for the champion itself (a retry, a re-evaluation) never demotes it: that takes a better model.
        return True, "passed", f"already champion ({m}={f.candidate})"
    if f.evaluation != EVALUATION_COMPLETE:
        return (
            False,
            "evaluation_incomplete",
            f"evaluation is {f.evaluation!r}, not 'complete': "
            "a failed, partial or unrecorded evaluation never promotes",
        )
    if f.record.run_status != "FINISHED":
        return False, "run_not_finished", f"its run is {f.record.run_status}, not FINISHED"
    if f.candidate is None:
        return False, "no_metric", f"no finite {m}: a failed or partial evaluation never promotes"
    if not f.record.recorded:
        return (
            False,
            "evaluation_unrecorded",
            (
                f"its run does not record what {m} was computed on ({PARAM_DATASET}, {PARAM_DEV_SIZE}, "
                f"{PARAM_DATA_VERSION}): {f.record.describe()}"
            ),
        )
    if f.record.dev_cap is not None and not allow_partial_dev:
        return (
            False,
            "partial_dev_split",
            (
                f"{m} was computed on a capped dev split ({PARAM_DEV_CAP}={f.record.dev_cap}, {f.record.dev_size} "
                "examples), not the full one"
            ),
        )
    if min_metric is not None and f.candidate < min_metric:
        return False, "below_floor", f"{m} {f.candidate:.6g} is below the quality floor {min_metric:g}"
    if f.champion is None:
        return True, "passed", f"first version with a valid {m} ({f.candidate:.6g}) becomes champion"
    if f.champion_metric is None:
        return (
            False,
            "champion_unreadable",
            f"champion v{f.champion} has no finite {m} to compare against; "
            "compare by hand and set the alias explicitly",
        )
    assert f.champion_record is not None
    if f.champion_record.split() != f.record.split():
        return (
            False,
            "not_comparable",
            (
                f"not comparable with champion v{f.champion}: this version was scored on {f.record.describe()}, the "
                f"champion on {f.champion_record.describe()}; compare on one split by hand and set the alias explicitly"
            ),
        )
    gain = f.candidate - f.champion_metric
    if f.candidate > f.champion_metric and gain >= min_delta:
        return (
            True,
            "passed",
            (
                f"{m} {f.candidate:.6g} beats champion v{f.champion} ({f.champion_metric:.6g}) by {gain:.6g} "
                f">= min_delta {min_delta:g}"
            ),
        )
    return (
        False,
        "below_min_delta",
        (
            f"{m} {f.candidate:.6g} does not beat champion v{f.champion} ({f.champion_metric:.6g}) by min_delta "
            f"{min_delta:g} (gain {gain:.6g})"
        ),
    )


def _read_facts(client, model_name: str, version: str, metric_name: str) -> tuple[_Facts, dict[str, str]]:
    model_version = client.get_model_version(model_name, version)
    current = aliases(client, model_name)
    champion = current.get(CHAMPION)
    champion_metric = champion_record = None
    if champion not in (None, version):
        champion_metric = version_dev_metric(client, model_name, champion, metric_name)
        champion_record = evaluation_record(client, client.get_model_version(model_name, champion).run_id)
    facts = _Facts(
        version=version,
        evaluation=model_version.tags.get(TAG_EVALUATION),
        candidate=version_dev_metric(client, model_name, version, metric_name),
        record=evaluation_record(client, model_version.run_id),
        champion=champion,
        champion_metric=champion_metric,
        champion_record=champion_record,
    )
    return facts, current


def promote(
    client,
    model_name: str,
    version: str | int,
    dev_metric: float | None = None,
    metric_name: str = SELECTION_METRIC_KEY,
    min_delta: float = DEFAULT_MIN_DELTA,
    min_metric: float | None = None,
    allow_partial_dev: bool = False,
    lock: contextlib.AbstractContextManager | None = None,
) -> PromotionDecision:
    """Decide whether ``version`` becomes champion, and apply the decision atomically (check-and-set under the
    registry lock; see the module docstring for the rules).

    ``dev_metric`` given: it is recorded on the version first (tag ``metric.<metric_name>``); None: the stored tag or
    the run's metric is used. ``min_metric`` is the optional quality floor. ``lock`` replaces the registry lock with
    any context manager (``contextlib.nullcontext()`` disables it: only to demonstrate the race it prevents).
    """
    version = str(version)
    if min_delta < 0 or not math.isfinite(min_delta):
        raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
    if min_metric is not None and not math.isfinite(min_metric):
        raise ValueError(f"min_metric (the quality floor) must be a finite number or None, got {min_metric!r}")
    # Fails early (RESOURCE_DOES_NOT_EXIST) for a version that is not registered.
    client.get_model_version(model_name, version)
    with lock if lock is not None else registry_lock(client, model_name):
        if dev_metric is not None:
            client.set_model_version_tag(model_name, version, metric_tag(metric_name), repr(float(dev_metric)))
        facts, current = _read_facts(client, model_name, version, metric_name)
        champion = facts.champion
        promoted, check, reason = _decide(facts, metric_name, min_delta, min_metric, allow_partial_dev)

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
        client.set_model_version_tag(model_name, version, TAG_CHECK, check)
        client.set_model_version_tag(model_name, version, TAG_REASON, reason)
        client.set_model_version_tag(model_name, version, TAG_COMPARED_TO, champion or "none")
    if not promoted:
        log.info("%s v%s stays challenger (%s): %s", model_name, version, check, reason)
    return PromotionDecision(version, alias, reason, champion, facts.candidate, facts.champion_metric, check)
