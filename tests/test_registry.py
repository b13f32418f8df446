"""Registry promotion against a real MLflow sqlite store in tmp_path, and against a real `mlflow server` on 127.0.0.1:
rules, refusals and their tags, the registry lock, and concurrent check-and-set across processes and URI spellings."""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow
import pytest
from mlflow import MlflowClient

from components.common.net import free_port
from components.tracking.mlflow_setup import setup_tracking
from components.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    DEFAULT_MIN_DELTA,
    RETIRED,
    TAG_CHECK,
    TAG_EVALUATION,
    TAG_HOLDER,
    TAG_LOCK,
    TAG_PROMOTION,
    TAG_REASON,
    PromotionConflict,
    aliases,
    champion_version,
    ensure_registered_model,
    lock_name,
    metric_tag,
    open_tickets,
    promote,
    reconcile_promotion_tags,
    register_version,
    registered_model_name,
    registry_lock,
    version_dev_metric,
)

# What the pipeline records on every training run; the comparability checks read these params.
FULL_DEV = {"data.dataset": "twitter2017", "data.dev_size": "1000", "lineage.data_version": "d41d8cd9.dir"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating its schema costs ~1 s); each test uses its own model name."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    setup = setup_tracking("registry-tests", tracking_uri=uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.create_run(setup.experiment_id)
    weights = root / "weights.txt"
    weights.write_text("a tiny stand-in for model weights\n")
    client.log_artifact(run.info.run_id, str(weights), "model")
    client.set_terminated(run.info.run_id)
    return {
        "uri": uri,
        "client": client,
        "run": run,
        "setup": setup,
        "source": f"{run.info.artifact_uri}/model",
        "weights": str(weights),
        "experiment_id": setup.experiment_id,
    }


def _run(store, params=None, status="FINISHED"):
    """A training run as the pipeline leaves it: its evaluation params, a model artifact, a final status."""
    client = store["client"]
    run = client.create_run(store["experiment_id"])
    for key, value in {**FULL_DEV, **(params or {})}.items():
        client.log_param(run.info.run_id, key, value)
    client.log_artifact(run.info.run_id, store["weights"], "model")
    client.set_terminated(run.info.run_id, status=status)
    return run


def _register(store, name, metric, params=None, status="FINISHED", **kwargs):
    """A new version from a run of its own (one trained model = one run = one version, as in the pipeline)."""
    run = _run(store, params, status)
    return register_version(
        store["client"], name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id, dev_metric=metric, **kwargs
    )


def test_first_version_becomes_champion_and_tags_say_why(store):
    client, name = store["client"], "first"
    v1 = _register(store, name, 0.5)
    assert aliases(client, name) == {CHALLENGER: v1}  # every registered version starts as challenger
    decision = promote(client, name, v1, metric_name="dev_f1")
    assert decision.promoted and decision.alias == CHAMPION and decision.previous_champion is None
    # Promoted. `challenger` stays on it (the newest version): removing an alias needs MLflow's DELETE permission,
    # which a trainer does not hold under basic-auth (issue 22).
    assert aliases(client, name) == {CHAMPION: v1, CHALLENGER: v1}
    tags = client.get_model_version(name, v1).tags
    assert tags[TAG_PROMOTION] == CHAMPION
    assert "first version" in tags[TAG_REASON]
    assert float(tags[metric_tag("dev_f1")]) == 0.5


def test_min_delta_decides_and_the_loser_stays_challenger_with_reason(store):
    client, name = store["client"], "delta"
    v1 = _register(store, name, 0.50)
    promote(client, name, v1, min_delta=0.01)
    v2 = _register(store, name, 0.505)  # better, but by less than min_delta
    small = promote(client, name, v2, min_delta=0.01)
    assert not small.promoted and small.alias == CHALLENGER and small.previous_champion == v1
    assert aliases(client, name) == {CHAMPION: v1, CHALLENGER: v2}
    reason = client.get_model_version(name, v2).tags[TAG_REASON]
    assert "does not beat champion v" + v1 in reason and "min_delta 0.01" in reason

    tie = promote(client, name, v2, dev_metric=0.50, min_delta=0.0)  # a tie never moves the alias
    assert not tie.promoted

    v3 = _register(store, name, 0.52)
    big = promote(client, name, v3, min_delta=0.01)
    assert big.promoted and big.previous_champion == v1 and big.champion_metric == 0.50
    assert aliases(client, name)[CHAMPION] == v3
    retired = client.get_model_version(name, v1).tags
    assert retired[TAG_PROMOTION] == RETIRED and f"replaced by v{v3}" in retired[TAG_REASON]
    # Re-running the decision for the champion changes nothing.
    again = promote(client, name, v3, min_delta=0.01)
    assert again.alias == CHAMPION and not again.promoted and aliases(client, name)[CHAMPION] == v3


@pytest.mark.parametrize("metric", [None, math.nan, math.inf])
def test_missing_or_nan_metric_never_promotes(store, metric):
    client, name = store["client"], f"nan-{metric}"
    first = _register(store, name, metric)
    decision = promote(client, name, first)  # not even over an empty champion slot
    assert decision.alias == CHALLENGER and not decision.promoted
    assert "failed or partial evaluation" in decision.reason
    assert CHAMPION not in aliases(client, name)
    v2 = _register(store, name, 0.3)
    promote(client, name, v2)
    v3 = _register(store, name, None)
    # The dev metric arrives at promotion time as NaN: stays challenger, champion untouched.
    late = promote(client, name, v3, dev_metric=math.nan)
    assert late.alias == CHALLENGER and champion_version(client, name) == v2


def test_failed_or_partial_evaluation_tag_never_promotes(store):
    client, name = store["client"], "failed-eval"
    v1 = _register(store, name, 0.2)
    promote(client, name, v1)
    for status in ("failed", "partial"):
        v = _register(store, name, 0.99, evaluation=status)
        decision = promote(client, name, v)
        assert decision.alias == CHALLENGER and status in decision.reason
        assert champion_version(client, name) == v1


def test_metric_falls_back_to_the_run(store):
    client = store["client"]
    run = client.create_run(store["setup"].experiment_id)
    client.log_metric(run.info.run_id, "dev_f1", 0.7)
    for key, value in FULL_DEV.items():
        client.log_param(run.info.run_id, key, value)
    client.set_terminated(run.info.run_id)
    v = register_version(client, "from-run", store["source"], run_id=run.info.run_id)  # no metric tag
    assert version_dev_metric(client, "from-run", v, "dev_f1") == 0.7
    assert promote(client, "from-run", v).promoted


def test_champion_without_a_metric_is_not_replaced(store):
    client, name = store["client"], "unknown-champion"
    v1 = _register(store, name, 0.4)
    client.set_registered_model_alias(name, CHAMPION, v1)  # set by hand, and compared on another metric below
    v2 = _register(store, name, 0.9)
    decision = promote(client, name, v2, metric_name="dev_accuracy", dev_metric=0.9)
    assert decision.alias == CHALLENGER and "no finite dev_accuracy" in decision.reason
    assert champion_version(client, name) == v1


def test_pyfunc_model_registers_through_its_logged_model_uri(store):
    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input: list[str]) -> list[str]:
            return model_input

    mlflow.set_tracking_uri(store["uri"])
    with mlflow.start_run(experiment_id=store["setup"].experiment_id) as run:
        mlflow.log_params(FULL_DEV)
        info = mlflow.pyfunc.log_model(name="model", python_model=Echo(), pip_requirements=[])
    name = registered_model_name("twitter2017")
    v = register_version(store["client"], name, info.model_uri, dev_metric=0.61)
    assert store["client"].get_model_version(name, v).run_id == run.info.run_id
    assert promote(store["client"], name, v).promoted
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}")
    assert loaded.predict(["a", "b"]) == ["a", "b"]


def test_read_back_detects_a_writer_that_bypasses_the_lock(store):
    class Meddler(MlflowClient):
        """Moves the alias right after our write, as a UI user or a lock-ignoring script would."""

        def set_registered_model_alias(self, name, alias, version):
            super().set_registered_model_alias(name, alias, version)
            if alias == CHAMPION:
                super().set_registered_model_alias(name, alias, "1")

    name = "meddled"
    v1 = _register(store, name, 0.1)
    promote(store["client"], name, v1)
    v2 = _register(store, name, 0.9)
    with pytest.raises(PromotionConflict, match="without the registry lock"):
        promote(Meddler(tracking_uri=store["uri"]), name, v2)


def test_the_lock_is_a_ticket_queue_held_by_one_promoter_and_released(store):
    client, name = store["client"], "locked"
    with registry_lock(client, name):
        (held,) = open_tickets(client, name)
        assert held.tags[TAG_HOLDER].startswith(socket.gethostname() + ":") and held.tags[TAG_LOCK] == "open:held"
        with pytest.raises(TimeoutError, match=r"promotion lock locked.promotion-lock held by .* \(ticket v1\)"):
            with registry_lock(MlflowClient(tracking_uri=store["uri"]), name, timeout=0.5):
                pass  # a second promoter cannot get in while the first holds it
    assert open_tickets(client, name) == []  # released; the second promoter's ticket was abandoned, not left open
    states = {str(v.version): v.tags[TAG_LOCK] for v in client.search_model_versions(f"name='{lock_name(name)}'")}
    assert states == {"1": "closed:released", "2": "closed:abandoned"}
    with registry_lock(client, name):  # and it is free again: a new ticket, nothing ahead of it
        assert [str(v.version) for v in open_tickets(client, name)] == ["3"]


def test_a_stale_lock_is_broken_with_a_log_line(store, caplog):
    client, name = store["client"], "stale"
    ensure_registered_model(client, lock_name(name))
    dead = client.create_model_version(
        lock_name(name), "promotion-lock:/stale", tags={TAG_LOCK: "open:held", TAG_HOLDER: "deadhost:1:x"}
    )
    time.sleep(1.1)
    with caplog.at_level("WARNING", logger="components.tracking.registry"):
        with registry_lock(client, name, timeout=5, stale_after=1.0):
            assert [v.tags[TAG_HOLDER] for v in open_tickets(client, name)] != ["deadhost:1:x"]
    assert client.get_model_version(lock_name(name), dead.version).tags[TAG_LOCK] == "closed:broken"
    assert f"breaking stale promotion lock stale.promotion-lock: ticket v{dead.version} held by deadhost:1:x" in (
        caplog.text
    )


def test_a_ticket_registered_twice_by_one_promoter_does_not_block_it(store, monkeypatch):
    """A create the client retried after a lost response leaves a second open ticket with our holder: ours."""
    client, name = store["client"], "retried-ticket"
    create = client.create_model_version

    def twice(*args, **kwargs):
        create(*args, **kwargs)  # the first attempt landed, its response was lost
        return create(*args, **kwargs)

    monkeypatch.setattr(client, "create_model_version", twice)
    with registry_lock(client, name, timeout=2):
        monkeypatch.undo()
        assert [str(v.version) for v in open_tickets(client, name)] == ["2"]
    assert open_tickets(client, name) == []


# ---------------------------------------------------------------------------------------------------------------------
# Never half-applied: a promotion that fails at any write leaves @champion explained, and the next promotion repairs


class _FailingClient(MlflowClient):
    """Raises after the n-th registry write of the model under test (lock tickets excluded), as a crash would."""

    def __init__(self, uri, name, fail_at):
        super().__init__(tracking_uri=uri, registry_uri=uri)
        self.name, self.fail_at, self.writes = name, fail_at, 0

    def _count(self, name):
        if name == self.name:
            self.writes += 1
            if self.writes == self.fail_at:
                raise RuntimeError(f"injected failure at write {self.fail_at}")

    def set_model_version_tag(self, name, version, key, value):
        super().set_model_version_tag(name, version, key, value)
        self._count(name)

    def set_registered_model_alias(self, name, alias, version):
        super().set_registered_model_alias(name, alias, version)
        self._count(name)


def assert_champion_explained(client, name, allowed):
    """What a consumer of @champion sees: one of `allowed`, tagged as champion with a passed check and a reason."""
    champion = champion_version(client, name)
    assert champion in allowed, (champion, allowed)
    tags = client.get_model_version(name, champion).tags
    assert tags[TAG_PROMOTION] == CHAMPION and tags[TAG_CHECK] == "passed" and tags[TAG_REASON], tags
    return champion


# A promotion of v2 over v1 writes: 4 tags on v2, the alias (the commit point), 2 tags on v1: 7 writes.
@pytest.mark.parametrize("fail_at", range(1, 8))
def test_a_promotion_failing_at_any_write_leaves_champion_explained_and_is_repaired(store, fail_at):
    client, name = store["client"], f"half-{fail_at}"
    v1 = _register(store, name, 0.5)
    promote(client, name, v1)
    v2 = _register(store, name, 0.9)
    with pytest.raises(RuntimeError, match=f"injected failure at write {fail_at}"):
        promote(_FailingClient(store["uri"], name, fail_at), name, v2)
    # Before the alias write (writes 1-4) the consumer still gets v1; from it on (5-7), v2. Either is explained.
    assert assert_champion_explained(client, name, {v1, v2}) == (v1 if fail_at < 5 else v2)
    assert open_tickets(client, name) == []  # the failed promoter released its lock
    # The retry (the flow's, or the next training's promotion) repairs the tags and completes.
    assert promote(client, name, v2).alias == CHAMPION
    assert assert_champion_explained(client, name, {v2}) == v2
    tagged = {str(v.version): v.tags[TAG_PROMOTION] for v in client.search_model_versions(f"name='{name}'")}
    assert tagged == {v1: RETIRED, v2: CHAMPION}


def test_a_version_left_tagged_champion_is_repaired_by_the_next_promotion(store):
    """The repair on its own: a candidate whose alias write never happened goes back to challenger."""
    client, name = store["client"], "repair"
    v1 = _register(store, name, 0.5)
    promote(client, name, v1)
    v2 = _register(store, name, 0.9)
    with pytest.raises(RuntimeError):
        promote(_FailingClient(store["uri"], name, 4), name, v2)  # all of v2's tags, then the crash
    assert client.get_model_version(name, v2).tags[TAG_PROMOTION] == CHAMPION and champion_version(client, name) == v1
    assert reconcile_promotion_tags(client, name) == [f"v{v2}: {CHALLENGER}"]
    assert "interrupted before the champion alias moved" in client.get_model_version(name, v2).tags[TAG_REASON]
    assert reconcile_promotion_tags(client, name) == []  # idempotent


def test_an_interrupted_first_promotion_is_repaired_as_challenger_not_retired(store):
    """No champion yet: the candidate's tags were written, the alias never was; it never was champion."""
    client, name = store["client"], "repair-first"
    v1 = _register(store, name, 0.5)
    client.set_model_version_tag(name, v1, TAG_PROMOTION, CHAMPION)  # what the tag writes before the alias leave
    assert champion_version(client, name) is None
    assert reconcile_promotion_tags(client, name) == [f"v{v1}: {CHALLENGER}"]
    assert "first promotion was interrupted" in client.get_model_version(name, v1).tags[TAG_REASON]


# ---------------------------------------------------------------------------------------------------------------------
# Item 7 of issue 14: each way an incomparable or unfinished version was promoted, now refused with its reason


def test_a_capped_dev_split_never_promotes_over_the_full_one(store):
    client, name = store["client"], "capped"
    v1 = _register(store, name, 0.70)
    promote(client, name, v1)
    capped = _register(store, name, 0.95, params={"data.dev_size": "16", "data.max_examples.dev": "16"})
    decision = promote(client, name, capped)
    assert decision.check == "partial_dev_split" and champion_version(client, name) == v1
    tags = client.get_model_version(name, capped).tags
    assert tags[TAG_CHECK] == "partial_dev_split" and "capped dev split" in tags[TAG_REASON]
    # Even where capped splits are allowed (quick runs), it is compared only with a champion on the same split.
    allowed = promote(client, name, capped, allow_partial_dev=True)
    assert allowed.check == "not_comparable" and "16 examples (capped at 16)" in allowed.reason
    assert champion_version(client, name) == v1


def test_a_capped_run_can_lead_a_registry_of_capped_runs_when_allowed(store):
    client, name = store["client"], "capped-only"
    capped = {"data.dev_size": "16", "data.max_examples.dev": "16"}
    v1 = _register(store, name, 0.3, params=capped)
    assert not promote(client, name, v1).promoted
    assert promote(client, name, v1, allow_partial_dev=True).promoted
    v2 = _register(store, name, 0.5, params=capped)
    assert promote(client, name, v2, allow_partial_dev=True).promoted


@pytest.mark.parametrize("status", ["FAILED", "KILLED", "RUNNING"])
def test_a_version_whose_run_did_not_finish_never_promotes(store, status):
    client, name = store["client"], f"unfinished-{status}"
    v1 = _register(store, name, 0.9, status=status)
    decision = promote(client, name, v1)
    assert decision.check == "run_not_finished" and status in decision.reason
    assert CHAMPION not in aliases(client, name)
    assert client.get_model_version(name, v1).tags[TAG_CHECK] == "run_not_finished"


def test_a_hand_registered_version_without_the_evaluation_tag_is_not_complete(store):
    client, name = store["client"], "by-hand"
    v1 = _register(store, name, 0.5)
    promote(client, name, v1)
    run = _run(store)
    client.create_model_version(
        name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id, tags={metric_tag("dev_f1"): "0.99"}
    )  # no evaluation tag
    hand = str(max(int(v.version) for v in client.search_model_versions(f"name='{name}'")))
    assert TAG_EVALUATION not in client.get_model_version(name, hand).tags
    decision = promote(client, name, hand)
    assert decision.check == "evaluation_incomplete" and champion_version(client, name) == v1


def test_the_default_min_delta_ignores_a_gain_within_seed_noise(store):
    client, name = store["client"], "noise"
    v1 = _register(store, name, 0.70)
    promote(client, name, v1)
    tiny = _register(store, name, 0.70 + 1e-12)
    decision = promote(client, name, tiny)  # the default min_delta
    assert decision.check == "below_min_delta" and f"min_delta {DEFAULT_MIN_DELTA:g}" in decision.reason
    assert champion_version(client, name) == v1
    clear = _register(store, name, 0.70 + DEFAULT_MIN_DELTA + 0.001)
    assert promote(client, name, clear).promoted


def test_the_quality_floor_keeps_a_poor_first_version_out(store):
    client, name = store["client"], "floor"
    poor = _register(store, name, 0.047)
    decision = promote(client, name, poor, min_metric=0.5)
    assert decision.check == "below_floor" and "quality floor 0.5" in decision.reason
    assert CHAMPION not in aliases(client, name)
    good = _register(store, name, 0.6)
    assert promote(client, name, good, min_metric=0.5).promoted


@pytest.mark.parametrize("changed", [{"lineage.data_version": "0123abcd.dir"}, {"data.dataset": "twitter2015"}])
def test_another_data_version_or_dataset_is_not_comparable(store, changed):
    client, name = store["client"], f"other-{sorted(changed)[0]}"
    v1 = _register(store, name, 0.6)
    promote(client, name, v1)
    other = _register(store, name, 0.9, params=changed)
    decision = promote(client, name, other)
    assert decision.check == "not_comparable" and next(iter(changed.values())) in decision.reason
    assert champion_version(client, name) == v1


def test_a_run_that_does_not_record_its_split_is_refused(store):
    client, name = store["client"], "unrecorded"
    run = client.create_run(store["experiment_id"])
    client.log_artifact(run.info.run_id, store["weights"], "model")
    client.set_terminated(run.info.run_id)
    v = register_version(client, name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id, dev_metric=0.8)
    assert promote(client, name, v).check == "evaluation_unrecorded"


# ---------------------------------------------------------------------------------------------------------------------
# Two processes promoting at once


class _SlowClient(MlflowClient):
    """Widens the race window: pauses after the champion read and before writing the champion alias.

    Only the first registered-model read pauses: that is promote's read of the aliases (MLflow itself re-reads the
    registered model inside several client calls, which need not be slowed down).
    """

    def __init__(self, uri, read_pause, write_pause):
        super().__init__(tracking_uri=uri, registry_uri=uri)
        self.read_pause, self.write_pause = read_pause, write_pause
        self._read_once = False

    def get_registered_model(self, name):
        model = super().get_registered_model(name)
        if not self._read_once and not name.endswith(".promotion-lock"):  # the lock's own reads are not slowed
            self._read_once = True
            time.sleep(self.read_pause)
        return model

    def set_registered_model_alias(self, name, alias, version):
        if alias == CHAMPION:
            time.sleep(self.write_pause)
        super().set_registered_model_alias(name, alias, version)


def _promoter(uri, barrier, jobs, results):
    """Worker process: for each job, wait for the other promoter, then promote; report the decision."""
    while (job := jobs.get()) is not None:
        name, version, read_pause, write_pause, use_lock = job
        client = _SlowClient(uri, read_pause, write_pause)
        barrier.wait(timeout=60)
        try:
            decision = promote(client, name, version, lock=None if use_lock else contextlib.nullcontext())
            results.put((version, decision.alias, None))
        except Exception as exc:  # reported to the parent, which fails the test with it
            results.put((version, None, repr(exc)))


def _start_promoters(uris):
    """One promoter process per URI (spawned: no forked copies of the parent's connections), sharing no lock file."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(uris))
    queues = [ctx.Queue() for _ in uris]
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_promoter, args=(uri, barrier, q, results), daemon=True)
        for uri, q in zip(uris, queues, strict=False)
    ]
    for w in workers:
        w.start()
    # The barrier goes back too: the caller keeps it alive (a collected barrier unlinks the semaphore the children
    # are still unpickling).
    return workers, queues, results, barrier


def _stop_promoters(workers, queues):
    for q in queues:
        q.put(None)
    for w in workers:
        w.join(timeout=30)


@pytest.fixture(scope="module")
def promoters(store):
    workers, queues, results, _barrier = _start_promoters([store["uri"], store["uri"]])
    yield queues, results
    _stop_promoters(workers, queues)


def _race(store, promoters, name, *, use_lock, slow_writer):
    """Champion v1 at 0.50; v2 (0.80) and v3 (0.60) are promoted at the same moment by two processes."""
    client = store["client"]
    v1 = _register(store, name, 0.50)
    promote(client, name, v1)
    better, worse = _register(store, name, 0.80), _register(store, name, 0.60)
    queues, results = promoters
    # The slow writer pauses before setting the alias: without a lock, whoever writes last wins.
    pauses = {"worse": (0.0, 0.5), "better": (0.5, 0.0)}[slow_writer]
    queues[0].put((name, better, 0.3, pauses[0], use_lock))
    queues[1].put((name, worse, 0.3, pauses[1], use_lock))
    outcomes = {}
    for _ in range(2):
        version, alias, error = results.get(timeout=60)
        assert error is None, error
        outcomes[version] = alias
    return champion_version(client, name), better, worse, outcomes


# ---------------------------------------------------------------------------------------------------------------------
# The same race against a real tracking server, reached as 127.0.0.1 by one promoter and as localhost by the other


@pytest.fixture(scope="module")
def server(tmp_path_factory, store):
    """`mlflow server` on 127.0.0.1 with a sqlite backend, stopped (and bounded by a timeout) when the module ends."""
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    mlflow_cli = os.path.join(os.path.dirname(sys.executable), "mlflow")
    log_file = open(root / "server.log", "wb")
    proc = subprocess.Popen(
        [
            mlflow_cli,
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--default-artifact-root",
            str(root / "artifacts"),
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (root / "server.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (
                "mlflow server not healthy after 240 s:\n" + (root / "server.log").read_text()
            )
            time.sleep(0.5)
        client = MlflowClient(tracking_uri=f"http://127.0.0.1:{port}", registry_uri=f"http://127.0.0.1:{port}")
        experiment_id = client.create_experiment("race", artifact_location=(root / "artifacts" / "race").as_uri())
        yield {"port": port, "client": client, "experiment_id": experiment_id, "weights": store["weights"]}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log_file.close()


@pytest.fixture(scope="module")
def server_promoters(server):
    uris = [f"http://127.0.0.1:{server['port']}", f"http://localhost:{server['port']}"]
    workers, queues, results, _barrier = _start_promoters(uris)
    yield queues, results
    _stop_promoters(workers, queues)


@pytest.mark.parametrize("round_, slow_writer", [(0, "worse"), (1, "better")])
def test_promoters_on_two_uri_spellings_of_one_server_end_with_a_consistent_champion(
    server, server_promoters, round_, slow_writer
):
    champion, better, worse, outcomes = _race(
        server, server_promoters, f"server-race-{round_}", use_lock=True, slow_writer=slow_writer
    )
    client = server["client"]
    assert champion == better and outcomes[better] == CHAMPION
    # Alias and tags agree: exactly one version is tagged champion, the one the alias points at.
    tagged = {
        str(v.version)
        for v in client.search_model_versions(f"name='server-race-{round_}'")
        if v.tags.get(TAG_PROMOTION) == CHAMPION
    }
    assert tagged == {better}
    # The worse one either lost against the better champion, or won first and was then replaced by it.
    assert client.get_model_version(f"server-race-{round_}", worse).tags[TAG_PROMOTION] in (CHALLENGER, RETIRED)
    assert open_tickets(client, f"server-race-{round_}") == []  # every ticket closed: the lock is free


def test_without_the_lock_two_uri_spellings_race_to_the_worse_champion(server, server_promoters):
    """The control for the server: the spelling-independent lock is what keeps the test above passing."""
    champion, better, worse, outcomes = _race(
        server, server_promoters, "server-race-unlocked", use_lock=False, slow_writer="worse"
    )
    assert outcomes == {better: CHAMPION, worse: CHAMPION} and champion == worse


@pytest.mark.parametrize("round_, slow_writer", [(0, "worse"), (1, "better"), (2, "worse"), (3, "better")])
def test_concurrent_promotions_always_leave_the_better_champion(store, promoters, round_, slow_writer):
    champion, better, worse, outcomes = _race(
        store, promoters, f"race-{round_}", use_lock=True, slow_writer=slow_writer
    )
    assert champion == better
    assert outcomes[better] == CHAMPION


def test_without_the_lock_the_same_race_leaves_the_worse_champion(store, promoters):
    """The control: it shows the race above is real, so its passing is due to the lock."""
    champion, better, worse, outcomes = _race(store, promoters, "race-unlocked", use_lock=False, slow_writer="worse")
    assert outcomes == {better: CHAMPION, worse: CHAMPION}  # both decided against the stale champion v1
    assert champion == worse


def test_registering_the_same_model_twice_reuses_its_version(tmp_path):
    """A retried pipeline must not add a duplicate version for a model it already registered."""
    import mlflow
    from mlflow import MlflowClient

    from components.tracking.registry import register_version

    uri = f"sqlite:///{tmp_path / 'reg.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input):
            return model_input

    with mlflow.start_run() as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=Echo())
    first = register_version(client, "shapca-retry", info.model_uri, run_id=run.info.run_id, dev_metric=0.5)
    again = register_version(client, "shapca-retry", info.model_uri, run_id=run.info.run_id, dev_metric=0.5)
    assert first == again == "1"
    assert len(client.search_model_versions("name='shapca-retry'")) == 1
