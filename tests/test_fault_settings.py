"""The parts of fault handling that need no server: what the deployments' retry budgets add up to, what the recovery
automations match, when an attempt stops itself (flows/attempt_watch.py), and that progress updates never make the
training wait (flows/progress.py). The real processes go through the faults in test_production_topology_faults.py."""

from __future__ import annotations

import threading
import time

import pytest
import yaml
from prefect.client.schemas.objects import StateType
from urllib3.util.retry import Retry

from flows.attempt_watch import AttemptWatch
from flows.progress import LatestOnly
from flows.provision import RETRY_AUTOMATION, ZOMBIE_AUTOMATION, Recovery, recovery_automations


def _deployment_env(project_root) -> dict[str, str]:
    deployments = yaml.safe_load((project_root / "prefect.yaml").read_text())["deployments"]
    envs = [d["work_pool"]["job_variables"]["env"] for d in deployments]
    assert all(env == envs[0] for env in envs), "every deployment gets the same fault settings"
    return envs[0]


def mlflow_retry_budget_s(max_retries: int, backoff_factor: float) -> float:
    """Seconds a request keeps retrying a server that refuses connections: urllib3's Retry, as MLflow configures it
    (mlflow/utils/request_utils.py `_cached_get_request_session`), without the jitter."""
    retry, slept = Retry(total=max_retries, connect=max_retries, backoff_factor=backoff_factor), 0.0
    while True:
        try:
            retry = retry.increment(method="GET", url="/", error=ConnectionError("refused"))
        except Exception:
            return slept
        slept += retry.get_backoff_time()


def test_mlflow_outages_of_five_minutes_stall_a_training_instead_of_failing_it(project_root):
    env = _deployment_env(project_root)
    ours = mlflow_retry_budget_s(
        int(env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]), float(env["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"])
    )
    default = mlflow_retry_budget_s(7, 2)  # MLFLOW_HTTP_REQUEST_MAX_RETRIES / _BACKOFF_FACTOR defaults
    assert default == 244  # what test_production_topology_faults.py outlasts with its 255 s MLflow outage
    assert ours >= 300, ours
    assert (
        int(env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) <= 10
    )  # MLflow refuses more (_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT)


def test_heartbeats_are_frequent_enough_for_the_crash_automation(project_root):
    heartbeat = int(_deployment_env(project_root)["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"])
    assert 30 <= heartbeat  # Prefect's minimum
    zombie_after = Recovery().zombie_after_s
    assert zombie_after >= 3 * heartbeat  # two late heartbeats do not crash a live run
    assert zombie_after + heartbeat <= 180  # a lost run is Crashed within 3 minutes of its last heartbeat


def test_the_retry_automation_bounds_attempts_and_waits_out_late_crash_reports():
    zombie, retry = recovery_automations(Recovery(zombie_after_s=120, retry_after_s=20, max_attempts=3))
    assert zombie.name == ZOMBIE_AUTOMATION and retry.name == RETRY_AUTOMATION
    assert zombie.actions[0].state == StateType.CRASHED
    trigger = retry.trigger
    assert trigger.after == {"prefect.flow-run.Crashed"} and "prefect.flow-run.Crashed" not in trigger.expect
    assert {"prefect.flow-run.Pending", "prefect.flow-run.Running", "prefect.flow-run.Cancelled"} <= trigger.expect
    # A retry by hand (Scheduled) does not count: a worker's late crash report inside the window would undo it, and
    # Prefect opens no second window for that second Crashed.
    assert not {"prefect.flow-run.Scheduled", "prefect.flow-run.AwaitingRetry"} & trigger.expect
    assert "prefect.flow-run.heartbeat" not in trigger.expect  # a dying process's last heartbeat does not
    assert trigger.match.root["prefect.run-count"] == ["1", "2"]  # crashed in attempt 1 or 2: a third is allowed
    assert retry.actions[0].state == StateType.SCHEDULED and retry.actions[0].name == "AwaitingRetry"
    with pytest.raises(ValueError, match="zombie_after_s >= 60"):
        Recovery(zombie_after_s=30)


class Stopped(Exception):
    pass


@pytest.fixture
def watch(tmp_path, monkeypatch):
    watch = AttemptWatch("flow-run-id", tmp_path, interval_s=0.01, grace_s=0.2)

    def stop(why, cancel):
        raise Stopped(("cancel" if cancel else "orphan", why))

    monkeypatch.setattr(watch, "stop", stop)
    return watch


def test_an_attempt_goes_on_while_its_flow_run_is_running_as_this_attempt(watch):
    for _ in range(3):
        watch.check(StateType.RUNNING, 2)
    assert watch.run_count == 2


@pytest.mark.parametrize(
    "state, run_count",
    [
        (StateType.CRASHED, 2),  # marked Crashed while cut off from the API, or a worker's late crash report
        (StateType.SCHEDULED, 2),  # rescheduled: another attempt is on its way
        (StateType.RUNNING, 3),  # another attempt already runs it
    ],
)
def test_an_attempt_that_no_longer_owns_its_flow_run_stops(watch, state, run_count):
    watch.check(StateType.RUNNING, 2)
    with pytest.raises(Stopped, match="orphan"):
        watch.check(state, run_count)


def test_a_cancel_the_worker_does_not_carry_out_is_carried_out_after_the_grace_period(watch):
    watch.check(StateType.RUNNING, 1)
    watch.check(StateType.CANCELLING, 1)  # the worker gets the grace period to do it
    time.sleep(0.25)
    with pytest.raises(Stopped, match="cancel.*Cancelling for"):
        watch.check(StateType.CANCELLING, 1)


def test_progress_updates_never_make_the_caller_wait_and_the_latest_wins():
    updates, seen, api_back = LatestOnly("test-progress"), [], threading.Event()

    def slow_api(value):
        api_back.wait(10)  # the Prefect API is down until the event is set
        seen.append(value)

    t0 = time.monotonic()
    for value in range(5):
        updates.submit(lambda value=value: slow_api(value))
    assert time.monotonic() - t0 < 0.5  # submitting never blocked
    assert not updates.flush(0.2)
    api_back.set()
    assert updates.flush(10)
    assert seen[-1] == 4 and len(seen) <= 2  # the first call (already running), then only the latest
