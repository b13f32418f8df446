"""Registry promotion against a real MLflow sqlite store in tmp_path: rules, tags, and concurrent check-and-set."""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import time

import mlflow
import pytest
from mlflow import MlflowClient

from components.tracking.mlflow_setup import setup_tracking
from components.tracking.registry import (
    CHALLENGER,
    CHAMPION,
    TAG_PROMOTION,
    TAG_REASON,
    PromotionConflict,
    aliases,
    champion_version,
    metric_tag,
    promote,
    register_version,
    registered_model_name,
    registry_lock_path,
    version_dev_metric,
)


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
    return {"uri": uri, "client": client, "run": run, "setup": setup, "source": f"{run.info.artifact_uri}/model",
            "weights": str(weights)}


def _register(store, name, metric, **kwargs):
    """A new version from a run of its own (one trained model = one run = one version, as in the pipeline)."""
    client = store["client"]
    run = client.create_run(store["setup"].experiment_id)
    client.log_artifact(run.info.run_id, store["weights"], "model")
    client.set_terminated(run.info.run_id)
    return register_version(client, name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                            dev_metric=metric, **kwargs)


def test_first_version_becomes_champion_and_tags_say_why(store):
    client, name = store["client"], "first"
    v1 = _register(store, name, 0.5)
    assert aliases(client, name) == {CHALLENGER: v1}  # every registered version starts as challenger
    decision = promote(client, name, v1, metric_name="dev_f1")
    assert decision.promoted and decision.alias == CHAMPION and decision.previous_champion is None
    assert aliases(client, name) == {CHAMPION: v1}  # promoted: no longer challenger
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
    assert retired[TAG_PROMOTION] == "retired" and f"replaced by v{v3}" in retired[TAG_REASON]
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


def test_lock_lives_next_to_the_sqlite_database(store):
    path = registry_lock_path(store["client"])
    assert path.name == "mlflow.db.registry.lock"
    assert path.parent == registry_lock_path(MlflowClient(tracking_uri=store["uri"])).parent


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
        if not self._read_once:
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


@pytest.fixture(scope="module")
def promoters(store):
    ctx = mp.get_context("spawn")  # no forked copies of the parent's sqlite connections
    barrier = ctx.Barrier(2)
    queues = [ctx.Queue(), ctx.Queue()]
    results = ctx.Queue()
    workers = [ctx.Process(target=_promoter, args=(store["uri"], barrier, q, results), daemon=True) for q in queues]
    for w in workers:
        w.start()
    yield queues, results
    for q in queues:
        q.put(None)
    for w in workers:
        w.join(timeout=30)


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
