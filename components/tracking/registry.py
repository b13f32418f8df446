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

  The first version that passes the checks before ``champion_unreadable`` becomes champion; the version it replaces
  is tagged ``promotion=retired``. ``challenger`` stays on the newest registered version, also when that version is
  promoted: removing an alias needs MLflow's DELETE permission (MANAGE), which the trainer does not hold.
- ``min_delta`` defaults to :data:`DEFAULT_MIN_DELTA`, ``tracking.min_delta``'s default (components/config.py says
  why it is one F1 point).

What a promoter needs
---------------------
Only what MLflow's ``basic-auth`` grants as EDIT on the registered models (the trainer's role, README "Production"):
create versions, set aliases, set version tags and descriptions, read. It never deletes an alias, a version or a
registered model, and it never creates a registered model that already exists (under MLflow's workspaces a trainer
cannot create one at all: the operator provisions ``shapca-<dataset>`` and its lock, flows/provision_mlflow.py).

Check-and-set, across hosts and users
-------------------------------------
MLflow has no compare-and-swap for aliases, so a promotion is a critical section under a lock that lives in the
registry itself: a ticket queue on the registered model ``<name>.promotion-lock``. Taking the lock registers a new
version of it (a *ticket*; its source ``promotion-lock:/<name>`` is never loaded) with the tag ``lock=open:waiting``
and who holds it (``holder`` = host:pid:nonce). Version numbers are assigned atomically by every MLflow store (a
unique key), so tickets are totally ordered whatever host or URI spelling created them. A ticket holds the lock when
no lower ticket is open; releasing sets its tag to ``closed:released``. A ticket older than ``LOCK_STALE_S`` (a
promotion takes seconds) belongs to a promoter that died: any waiter closes it (``closed:broken``, with a WARNING log
line). Every step is a version create or a tag write, so it needs EDIT only, and any trainer host, under any user
with EDIT, can break a stale lock. Ages are measured on the server's clock (ticket creation times), not the hosts'.

Inside the lock: read the champion and its metric, decide, set the alias, then read the alias back and fail loudly
(:class:`PromotionConflict`) if it is not what was just written. Two promoters racing therefore serialise, and the
second one compares against the first one's result, so the alias can never end on the worse model. The read-back
only detects, after the fact, someone who moves the alias by hand without the lock (the UI).

Never half-applied
------------------
The ``champion`` alias is the commit point, and everything that explains a promotion is written before it: the
candidate's ``promotion=champion``, ``promotion_check``, ``promotion_reason`` and ``promotion_compared_to`` first,
then the alias, then the replaced champion's ``promotion=retired``. After a failure at any step, the version that
``@champion`` resolves to carries ``promotion=champion``, a passed check and the reason: the old champion (the alias
did not move) or the new one. What a failure can leave behind is a version tagged champion that does not hold the
alias (the candidate whose alias write failed, or the champion it replaced); every promotion first repairs those
tags under the lock (:func:`reconcile_promotion_tags`), so the registry converges on the next promotion or retry.
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
RETIRED = "retired"
EVALUATION_COMPLETE = "complete"
DEFAULT_MIN_DELTA: float = TrackingConfig.model_fields["min_delta"].default
LOCK_SUFFIX = ".promotion-lock"
LOCK_TIMEOUT_S = 120.0  # how long a promoter waits for the lock before giving up
LOCK_STALE_S = 900.0  # a ticket this old belongs to a promoter that died: break it
TAG_LOCK = "lock"  # a ticket's state: open:waiting, open:held, closed:released, closed:abandoned, closed:broken
TAG_HOLDER = "holder"
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


def ensure_registered_model(client, name: str, description: str | None = None) -> bool:
    """Create the registered model ``name`` unless it exists; True if this call created it.

    It reads first: under MLflow's workspaces a user without the workspace grant (the trainer) is refused a create
    (PERMISSION_DENIED) even for a name that exists, so only a missing model is ever created. A concurrent creator
    between the read and the create is fine (RESOURCE_ALREADY_EXISTS).
    """
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return False
    except MlflowException as exc:
        if not _is_not_found(exc):
            raise
    try:
        client.create_registered_model(name, description=description)
        return True
    except MlflowException as exc:
        if not _is_already_exists(exc):
            raise
        return False


def open_tickets(client, model_name: str, below: int | None = None) -> list:
    """The lock's open tickets (waiting or holding), lowest first; only those numbered below ``below`` if given."""
    query = f"name='{lock_name(model_name)}' and tags.{TAG_LOCK} LIKE 'open:%'"
    if below is not None:
        query += f" and version_number < {int(below)}"
    return sorted(client.search_model_versions(query), key=lambda v: int(v.version))


def _set_ticket(client, model_name: str, ticket: int | str, state: str) -> None:
    client.set_model_version_tag(lock_name(model_name), str(ticket), TAG_LOCK, state)


@contextlib.contextmanager
def registry_lock(client, model_name: str, timeout: float = LOCK_TIMEOUT_S, stale_after: float = LOCK_STALE_S):
    """Hold the promotion lock of ``model_name`` (a ticket queue, see the module docstring) for the block;
    TimeoutError after waiting ``timeout`` seconds."""
    name = lock_name(model_name)
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    ensure_registered_model(
        client, name, description=f"promotion lock of {model_name}: each version is a ticket (components/tracking)"
    )
    ticket = client.create_model_version(
        name,
        source=f"promotion-lock:/{model_name}",
        tags={TAG_LOCK: "open:waiting", TAG_HOLDER: holder},
        description=f"ticket of {holder}",
    )
    mine, issued_ms, t0 = int(ticket.version), int(ticket.creation_timestamp), time.monotonic()
    final = "closed:abandoned"
    try:
        while ahead := open_tickets(client, model_name, below=mine):
            waited = time.monotonic() - t0
            for other in ahead:
                if other.tags.get(TAG_HOLDER) == holder:
                    # Ours: a create the client retried after a lost response registered it twice.
                    _set_ticket(client, model_name, other.version, "closed:abandoned")
                    continue
                # On the server's clock: how long before our ticket it was issued, plus how long we have waited.
                age = (issued_ms - int(other.creation_timestamp)) / 1000.0 + waited
                if age > stale_after:
                    log.warning(
                        "breaking stale promotion lock %s: ticket v%s held by %s for %.0f s > %.0f s, its promoter "
                        "died",
                        name,
                        other.version,
                        other.tags.get(TAG_HOLDER),
                        age,
                        stale_after,
                    )
                    _set_ticket(client, model_name, other.version, "closed:broken")
            if waited > timeout:
                first = ahead[0]
                raise TimeoutError(
                    f"promotion lock {name} held by {first.tags.get(TAG_HOLDER)} (ticket v{first.version}) for more "
                    f"than {timeout:.0f}s; it is broken automatically after {stale_after:.0f}s, or close it by hand "
                    f"(tag {TAG_LOCK}=closed:broken on version {first.version} of {name!r}) if no promotion is "
                    "running"
                )
            time.sleep(0.05 + random.random() * 0.2)  # jitter: waiting promoters do not hammer the store in step
        _set_ticket(client, model_name, mine, "open:held")
        final = "closed:released"
        yield
    finally:
        _set_ticket(client, model_name, mine, final)


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
    """Register ``model_uri`` as a new version, tag its dev metric and evaluation status, give it ``challenger``
    (unless a newer version already has it).

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

    ensure_registered_model(client, model_name)
    existing = _version_of(client, model_name, model_uri, run_id)
    if existing is not None:
        # A retried pipeline registers the same model again: reuse its version instead of adding a duplicate.
        return existing
    created = client.create_model_version(
        model_name, source=model_uri, run_id=run_id, tags=version_tags, model_id=logged_model_id
    )
    version = str(created.version)
    # `challenger` only moves forward: a registration that finishes after a newer one leaves it on the newer.
    current = aliases(client, model_name).get(CHALLENGER)
    if current is None or int(current) < int(version):
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


def _read_facts(client, model_name: str, version: str, metric_name: str) -> _Facts:
    model_version = client.get_model_version(model_name, version)
    champion = champion_version(client, model_name)
    champion_metric = champion_record = None
    if champion not in (None, version):
        champion_metric = version_dev_metric(client, model_name, champion, metric_name)
        champion_record = evaluation_record(client, client.get_model_version(model_name, champion).run_id)
    return _Facts(
        version=version,
        evaluation=model_version.tags.get(TAG_EVALUATION),
        candidate=version_dev_metric(client, model_name, version, metric_name),
        record=evaluation_record(client, model_version.run_id),
        champion=champion,
        champion_metric=champion_metric,
        champion_record=champion_record,
    )


def _tag_version(client, model_name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():  # MLflow has no batch write for version tags
        client.set_model_version_tag(model_name, version, key, value)


def reconcile_promotion_tags(client, model_name: str) -> list[str]:
    """Repair what an interrupted promotion left: every version tagged ``promotion=champion`` that does not hold the
    ``champion`` alias is re-tagged. If there is no champion, or it was compared against the current one, its own
    alias write never happened (``challenger``); otherwise it is a champion that was replaced (``retired``). Call
    under the lock; returns one line per repaired version."""
    champion = champion_version(client, model_name)
    repaired = []
    for stale in client.search_model_versions(f"name='{model_name}' and tags.{TAG_PROMOTION} = '{CHAMPION}'"):
        version = str(stale.version)
        if version == champion:
            continue
        if champion is None:  # promotion never deletes the alias: with none, no version ever held it
            status = CHALLENGER
            reason = "a first promotion was interrupted before the champion alias was set; promote it again"
        elif stale.tags.get(TAG_COMPARED_TO) == champion:
            status = CHALLENGER
            reason = f"a promotion over v{champion} was interrupted before the champion alias moved; promote it again"
        else:
            status = RETIRED
            reason = f"no longer champion (v{champion} is): its retirement was interrupted and repaired"
        _tag_version(client, model_name, version, {TAG_PROMOTION: status, TAG_REASON: reason})
        log.warning(
            "%s v%s was tagged champion without holding the alias: now %s (%s)", model_name, version, status, reason
        )
        repaired.append(f"v{version}: {status}")
    return repaired


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
    registry lock, the explanation written before the alias moves; see the module docstring for the rules).

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
        reconcile_promotion_tags(client, model_name)
        if dev_metric is not None:
            client.set_model_version_tag(model_name, version, metric_tag(metric_name), repr(float(dev_metric)))
        facts = _read_facts(client, model_name, version, metric_name)
        champion = facts.champion
        promoted, check, reason = _decide(facts, metric_name, min_delta, min_metric, allow_partial_dev)
        alias = CHAMPION if promoted else CHALLENGER
        # The explanation first: whichever version @champion resolves to after a failure is tagged for it.
        _tag_version(
            client,
            model_name,
            version,
            {TAG_PROMOTION: alias, TAG_CHECK: check, TAG_REASON: reason, TAG_COMPARED_TO: champion or "none"},
        )
        if promoted and champion != version:
            client.set_registered_model_alias(model_name, CHAMPION, version)  # the commit point
            after = aliases(client, model_name)
            if after.get(CHAMPION) != version:
                raise PromotionConflict(
                    f"{model_name}: champion is v{after.get(CHAMPION)} right after setting it to v{version}; "
                    "something moves the alias without the registry lock"
                )
            if champion is not None:
                _tag_version(
                    client,
                    model_name,
                    champion,
                    {TAG_PROMOTION: RETIRED, TAG_REASON: f"replaced by v{version}: {reason}"},
                )
    if not promoted:
        log.info("%s v%s stays challenger (%s): %s", model_name, version, check, reason)
    return PromotionDecision(version, alias, reason, champion, facts.candidate, facts.champion_metric, check)
