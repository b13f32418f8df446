"""Faults on the production topology (issue 21), with real processes on 127.0.0.1, on the session's shared stack.

Three `train-shapca` flow runs of a tiny CPU training run at once, each through one fault, on one timeline:

    A  train-shapca/gpu, 4 epochs   SIGKILL its worker and its flow-run process in epoch 2, start a second worker
                                    in another empty directory: the missed-heartbeats automation marks it Crashed
                                    (its concurrency slot freed), the retry automation reschedules it, it resumes
                                    from the epoch-1 checkpoint on S3 on the second worker and completes: one MLflow
                                    run FINISHED, one version, test metrics equal to C's (an uninterrupted run).
    B  train-shapca/cpu, 200 epochs SIGKILL only its flow-run process in epoch 2 and `prefect flow-run retry` it as
                                    soon as it is Crashed: the retry runs (redone by the automation if the worker's
                                    late crash report undid it) and resumes from epoch 2; then, mid-training, stop the
                                    Prefect server for 60 s, start it, cancel the run: it is Cancelled, its MLflow run
                                    KILLED.
    C  train-shapca/cpu, 4 epochs   the reference, uninterrupted: the MLflow server is stopped for 255 s in its
                                    epoch 2 or 3 (longer than the MLflow client's default retry budget of 244 s), and it
                                    completes with every epoch's metrics; the retries show as warnings in its logs.

The MLflow outage starts once the three runs have published epoch 1 and A and B are killed, so A's recovery (about
2.5 minutes of detection and retry delay) and B's retry happen in its shadow; B's Prefect outage comes after it.
Settings are the deployments' own (prefect.yaml: heartbeat every 30 s, MLflow retries; flows.provision: Crashed
after 120 s without heartbeat, retried after 20 s): the test uses the production values.

Runs after the end-to-end test (files run in name order) and assumes nothing about what it registered.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient
from prefect_harness import ManagedProcess
from production_topology import ProductionStack, run_checked
from test_production_topology import MODEL

pytestmark = pytest.mark.slow


def fault_overrides(text_encoder: Path, epochs: int) -> list[str]:
    """A small CPU training whose epochs last long enough (16 steps) for a fault to land in epoch 2: a tiny random
    BERT (on this host's disk, which every worker here shares) instead of MiniLM, 128 training tweets."""
    return [
        "train.device=cpu",
        "train.precision=fp32",
        f"train.epochs={epochs}",
        "train.patience=100",  # every epoch runs: A and C train the same ones
        "train.batch_size=8",
        "data.max_examples={train: 128, dev: 24, test: 24}",
        f"model.text_encoder={text_encoder}",
        # A (the gpu deployment) and C (the cpu one) train one config, and the deployments' configs differ in the case
        # features (prefect.yaml: the gpu config keeps them off): the same value for both.
        "model.word_features=none",
        "model.align_dim=16",
        "model.permutations=8",
        "tracking.allow_partial_dev=true",
    ]


EPOCHS = 4  # of A and C: A trains epochs 2-4 again after its resume
ZOMBIE_AFTER_S = 120  # flows.provision's default, what the stack provisioned
MLFLOW_DEFAULT_BUDGET_S = 244  # MLflow's default client: 7 retries, factor 2 (0+4+8+16+32+64+120 s)
MLFLOW_OUTAGE_S = 255
PREFECT_OUTAGE_S = 60
A_KILLED = "A: worker and flow-run process SIGKILLed in epoch 2"


class Timeline:
    """Seconds since the start of the scenarios, per event, for the report and the assertions."""

    def __init__(self):
        self.t0 = time.monotonic()
        self.events: dict[str, float] = {}

    def now(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, event: str) -> float:
        self.events[event] = round(self.now(), 1)
        print(f"[faults +{self.events[event]:7.1f}s] {event}", flush=True)
        return self.events[event]


def wait_until(check: Callable[[], object], timeout: float, what: str, every: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(every)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def sigkill_family(pid: int) -> list[int]:
    """SIGKILL a process and every descendant at once (a node that vanishes), by pid."""
    try:
        family = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    for proc in family:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    return [p.pid for p in family]


def flow_run_processes(workers: list[ManagedProcess], flow_run_id: str) -> list[psutil.Process]:
    """The descendants of these workers that run this flow run (the environment names it), outermost first."""
    found = []
    for worker in workers:
        for proc in psutil.Process(worker.popen.pid).children(recursive=True):
            try:
                if proc.environ().get("PREFECT__FLOW_RUN_ID") == flow_run_id:
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
    return found


class Runs:
    """The stack's flow runs as the test sees them: through the operator's Prefect API, S3 and MLflow."""

    def __init__(self, stack: ProductionStack, tmp_path: Path):
        self.stack, self.penv, self.tmp_path = stack, stack.penv, tmp_path

    def submit(self, deployment: str, overrides: list[str]) -> str:
        """What `prefect deployment run <deployment> -p overrides=...` does, through the API (the CLI's start-up takes
        seconds the timeline cannot spare; the end-to-end test runs the CLI)."""
        flow, name = deployment.split("/")
        row = self.stack.deployments()[(flow, name)]
        # One thread per training: three of them share the machine's cores (the job variables replace the
        # deployment's env as a whole, so it is restated).
        env = {**row["job_variables"]["env"], "OMP_NUM_THREADS": "1"}
        body = {"parameters": {"overrides": overrides}, "job_variables": {"env": env}}
        return self.penv.api("POST", f"/deployments/{row['id']}/create_flow_run", body)["id"]

    def state(self, flow_run_id: str) -> dict:
        return self.penv.flow_run(flow_run_id)

    def state_type(self, flow_run_id: str) -> str | None:
        try:
            return self.state(flow_run_id)["state"]["type"]
        except OSError:  # the Prefect server is down
            return None

    def history(self, flow_run_id: str) -> list[tuple[str, str]]:
        states = self.penv.api("GET", f"/flow_run_states/?flow_run_id={flow_run_id}")
        ordered = sorted(states, key=lambda s: s["timestamp"])
        return [(s["name"], (s.get("message") or "")[:100]) for s in ordered]

    def logs(self, flow_run_id: str) -> list[str]:
        body = {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200, "sort": "TIMESTAMP_ASC"}
        messages, offset = [], 0
        while page := self.penv.api("POST", "/logs/filter", {**body, "offset": offset}):
            messages += [entry["message"] for entry in page]
            offset += len(page)
        return messages

    def heartbeats(self, flow_run_id: str) -> list[dict]:
        body = {
            "filter": {
                "event": {"name": ["prefect.flow-run.heartbeat"]},
                "resource": {"id": [f"prefect.flow-run.{flow_run_id}"]},
            }
        }
        return self.penv.api("POST", "/events/filter", body)["events"]

    def retry_when_crashed(self, flow_run_id: str) -> subprocess.Popen:
        """`prefect flow-run retry <id>` the moment the run is Crashed: the CLI, started beforehand and waiting, so
        that its start-up time does not delay the retry (a person at the terminal, waiting for the crash)."""
        # Prefect's own client, so that it authenticates as the operator's CLI does (stack.penv's environment).
        script = (
            "import sys, time\n"
            "from prefect.cli import app\n"
            "from prefect.client.orchestration import get_client\n"
            "with get_client(sync_client=True) as client:\n"
            f"    while client.read_flow_run('{flow_run_id}').state.type.value != 'CRASHED':\n"
            "        time.sleep(0.2)\n"
            f"sys.argv = ['prefect', 'flow-run', 'retry', '{flow_run_id}']\n"
            "sys.exit(app())\n"
        )
        return subprocess.Popen(
            [sys.executable, "-c", script],
            env=self.penv.env,
            cwd=self.tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def published_epoch(self, flow_run_id: str) -> int:
        try:
            body = self.stack.s3.get_object(Bucket="shapca", Key=f"checkpoints/flow-run-{flow_run_id}/LATEST.json")
        except self.stack.s3.exceptions.NoSuchKey:
            return 0
        return json.loads(body["Body"].read())["epoch"]

    def concurrency_slots(self, deployment: str) -> int:
        (deployment_row,) = [
            d for (flow, name), d in self.stack.deployments().items() if f"{flow}/{name}" == deployment
        ]
        return deployment_row["global_concurrency_limit"]["active_slots"]


def mlflow_runs_of(client: MlflowClient, flow_run_id: str):
    """The MLflow runs trained for a flow run: its output directory is a logged parameter."""
    experiment = client.get_experiment_by_name("shapca")
    output_dir = f"outputs/flow-run-{flow_run_id}"
    return client.search_runs([experiment.experiment_id], f"params.`train.output_dir` = '{output_dir}'")


def steps(client: MlflowClient, run_id: str, metric: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, metric))


@pytest.mark.timeout(2400)  # about 12 minutes on a loaded 2-core machine (the stack set up already); a generous bound
def test_a_lost_worker_a_killed_process_and_server_outages_are_recovered(
    production_stack: ProductionStack, tmp_path, monkeypatch, tiny_bert_dir
):
    stack = production_stack
    for key, value in stack.env("operator").items():  # the MLflow credentials the operator holds, if any
        if key.startswith("MLFLOW_TRACKING_") and key != "MLFLOW_TRACKING_URI":
            monkeypatch.setenv(key, value)
    mlflow = MlflowClient(tracking_uri=stack.tracking_uri, registry_uri=stack.tracking_uri)
    runs = Runs(stack, tmp_path)

    # The operator's provisioning made the recovery automations, and running it again changes nothing but them.
    provision = stack.operator_output["provision"]
    assert "shapca: crash flow runs without heartbeats" in provision and "shapca: retry crashed flow runs" in provision
    again = run_checked([sys.executable, "-m", "flows.provision"], stack.penv.env, stack.project_root)
    assert again.count("': updated") == 2, again
    automations = stack.penv.api("POST", "/automations/filter", {})
    assert sorted(a["name"] for a in automations if a["name"].startswith("shapca:")) == [
        "shapca: crash flow runs without heartbeats",
        "shapca: retry crashed flow runs",
    ]
    versions_before = {v.version for v in mlflow.search_model_versions(f"name = '{MODEL}'")}

    gpu_1, _ = stack.start_worker("gpu")
    cpu_b, _ = stack.start_worker("cpu")  # B and C run on these two, each on either
    cpu_c, _ = stack.start_worker("cpu")
    gpu_2 = None
    t = Timeline()
    a = runs.submit("train-shapca/gpu", fault_overrides(tiny_bert_dir, epochs=EPOCHS))
    b = runs.submit("train-shapca/cpu", fault_overrides(tiny_bert_dir, epochs=200))  # cancelled long before its end
    c = runs.submit("train-shapca/cpu", fault_overrides(tiny_bert_dir, epochs=EPOCHS))
    retry_b = runs.retry_when_crashed(b)
    t.mark("A, B, C submitted")
    try:
        # -- epoch 1 published: A and B killed in epoch 2; then, C mid-training, the MLflow server goes away for
        # longer than the client's default retry budget
        killed, mlflow_down = set(), None
        while mlflow_down is None:
            if "A" not in killed and (epoch := runs.published_epoch(a)) >= 1:
                assert epoch == 1, "A trained past epoch 2 before the test saw epoch 1: its epochs are too short"
                assert runs.state_type(a) == "RUNNING"
                assert runs.heartbeats(a), "A sends no flow-run heartbeat"
                assert runs.concurrency_slots("train-shapca/gpu") == 1  # the GPU slot is held while A lives
                assert flow_run_processes([gpu_1], a), f"no process of flow run {a} under the gpu worker"
                sigkill_family(gpu_1.popen.pid)
                gpu_1.popen.wait(timeout=30)
                t.mark(A_KILLED)
                gpu_2, _ = stack.start_worker("gpu")
                killed.add("A")
            if "B" not in killed and (epoch := runs.published_epoch(b)) >= 1:
                assert epoch == 1, "B trained past epoch 2 before the test saw epoch 1: its epochs are too short"
                # B runs under whichever cpu worker took it; that worker stays alive.
                (outermost, *_) = flow_run_processes([cpu_b, cpu_c], b) or [None]
                assert outermost is not None, f"no process of flow run {b} under a cpu worker"
                sigkill_family(outermost.pid)
                t.mark("B: flow-run process SIGKILLed in epoch 2 (worker alive)")
                killed.add("B")
            if killed == {"A", "B"} and runs.published_epoch(c) >= 1:
                assert runs.state_type(c) == "RUNNING", "C is no longer mid-training"
                stack.mlflow.stop()
                mlflow_down = t.mark("MLflow server stopped (C mid-training)")
            if retry_b.poll() is not None and "B: retried" not in t.events:
                t.mark("B: retried")
            assert runs.state_type(c) not in ("COMPLETED", "FAILED", "CRASHED")
            time.sleep(0.5)
        retried = retry_b.communicate(timeout=120)[0]
        assert retry_b.returncode == 0 and "has been scheduled for retry" in retried, retried
        if "B: retried" not in t.events:
            t.mark("B: retried")

        # -- A: marked Crashed by the automation, its slot freed, rescheduled without a human
        wait_until(lambda: runs.state_type(a) == "CRASHED", ZOMBIE_AFTER_S + 90, "A marked Crashed")
        crashed_after = (
            t.mark("A: Crashed (missed heartbeats)") - t.events["A: worker and flow-run process SIGKILLed in epoch 2"]
        )
        assert runs.concurrency_slots("train-shapca/gpu") == 0  # freed by the Crashed state, before any retry
        wait_until(lambda: runs.state_type(a) in ("SCHEDULED", "PENDING", "RUNNING"), 90, "A rescheduled")
        t.mark("A: rescheduled by the retry automation")

        wait_until(lambda: t.now() - mlflow_down >= MLFLOW_OUTAGE_S, MLFLOW_OUTAGE_S + 10, "the MLflow outage", 1)
        stack.mlflow.start()
        t.mark("MLflow server started again")

        # -- B: its retry resumed from the shared checkpoint; mid-training, the Prefect server goes away for 60 s
        wait_until(lambda: any("resumed from" in m and "after epoch 1" in m for m in runs.logs(b)), 900, "B resumed")
        t.mark("B: resumed from epoch 1's checkpoint")
        stack.prefect.stop()
        t.mark("Prefect server stopped (B training)")
        time.sleep(PREFECT_OUTAGE_S)
        stack.prefect.start()
        t.mark("Prefect server started again")
        assert runs.state_type(b) == "RUNNING", runs.history(b)
        runs.penv.cli("flow-run", "cancel", b, cwd=tmp_path)
        t.mark("B: cancel sent")
        wait_until(lambda: runs.state_type(b) == "CANCELLED", 180, f"B cancelled: {runs.history(b)}")
        t.mark("B: Cancelled")

        for name, run in (("A", a), ("C", c)):
            wait_until(
                lambda run=run: runs.state_type(run) in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"),
                1200,
                f"{name} finished",
                every=5,
            )
            t.mark(f"{name}: {runs.state_type(run)}")
    finally:
        if retry_b.poll() is None:
            retry_b.kill()
        for proc in (gpu_1, cpu_b, cpu_c, gpu_2):
            if proc is not None:
                proc.stop()
        if not stack.mlflow.alive():
            stack.mlflow.start()
        if not stack.prefect.alive():
            stack.prefect.start()
        print("fault timeline (s):", json.dumps(t.events, indent=1))

    # A: Crashed without a human, retried on the second worker, resumed from epoch 1, one MLflow run, one version.
    assert runs.state_type(a) == "COMPLETED", (runs.history(a), runs.logs(a)[-30:])
    assert crashed_after <= ZOMBIE_AFTER_S + 60, crashed_after
    history_a = runs.history(a)
    assert ("Crashed", f"No heartbeat for {ZOMBIE_AFTER_S} s: its process or host is gone") in history_a, history_a
    assert "AwaitingRetry" in [name for name, _ in history_a], history_a
    logs_a = runs.logs(a)
    # A's second attempt may also be stopped by Prefect itself: its deployment concurrency lease (300 s, renewed every
    # 225 s) lapses when the Prefect outage covers a renewal and outlasts the lease's 75 s margin, as it can on a
    # loaded machine (README, failure modes); that attempt is retried like any crash and resumes from its checkpoint.
    output_2 = gpu_2.log(10_000_000)  # what A's later attempts printed: every line, kept through the Prefect outage
    lease_lost = "Concurrency lease renewal failed" in output_2
    assert runs.state(a)["run_count"] == (3 if lease_lost else 2), history_a
    assert any(m.startswith("pulled the checkpoint of epoch 1 from s3://shapca/checkpoints/") for m in logs_a), logs_a
    # The resume is in the output of A's process (the second worker's log), and in the flow run's logs unless its line
    # was sent early in the Prefect outage: A resumes once its MLflow retries reach the restarted server, up to 120 s
    # after B, and Prefect drops a batch of log lines it could not send in 5 retries (about 62 s), saying so on the
    # process's stderr (README, failure modes).
    assert a in output_2, "the second worker did not run A's retry"
    assert f"resumed from outputs/flow-run-{a}/checkpoints/last after epoch 1" in output_2, output_2[-3000:]
    if not any("resumed from" in m and "after epoch 1" in m for m in logs_a):
        assert "--- Error logging to API ---" in output_2, logs_a
    (run_a,) = mlflow_runs_of(mlflow, a)
    assert run_a.info.status == "FINISHED"
    assert steps(mlflow, run_a.info.run_id, "dev_f1") == list(range(1, EPOCHS + 1))
    versions_a = mlflow.search_model_versions(f"name = '{MODEL}' and run_id = '{run_a.info.run_id}'")
    assert len(versions_a) == 1
    assert not [
        k for k in stack.s3.list_objects_v2(Bucket="shapca", Prefix=f"checkpoints/flow-run-{a}/").get("Contents", [])
    ]

    # C: through a longer MLflow outage than the client's default budget, complete, every epoch logged, retries shown.
    assert MLFLOW_OUTAGE_S > MLFLOW_DEFAULT_BUDGET_S
    assert runs.state_type(c) == "COMPLETED", (runs.history(c), runs.logs(c)[-30:])
    (run_c,) = mlflow_runs_of(mlflow, c)
    assert run_c.info.status == "FINISHED"
    for metric in ("dev_f1", "train_loss", "train_samples"):
        assert steps(mlflow, run_c.info.run_id, metric) == list(range(1, EPOCHS + 1)), metric
    assert any(m.startswith("Retrying (Retry(total=") for m in runs.logs(c)), "no MLflow retry warning in C's logs"
    assert len(mlflow.search_model_versions(f"name = '{MODEL}' and run_id = '{run_c.info.run_id}'")) == 1

    # A resumed ends where the uninterrupted C ends: same config, same test metrics.
    identity = {
        k: v for k, v in run_a.data.params.items() if not k.startswith(("train.output_dir", "train.checkpoint_url"))
    }
    assert identity == {k: v for k, v in run_c.data.params.items() if k in identity}
    test_a = {k: v for k, v in run_a.data.metrics.items() if k.startswith("test_")}
    test_c = {k: v for k, v in run_c.data.metrics.items() if k.startswith("test_")}
    assert test_a and test_a.keys() == test_c.keys()
    assert test_a == pytest.approx(test_c, abs=1e-6)

    # B: resumed (its retry was not lost), then cancelled after a Prefect outage: Cancelled, its MLflow run KILLED.
    history_b = runs.history(b)
    assert [name for name, _ in history_b].count("Running") + [name for name, _ in history_b].count("Retrying") >= 2
    (run_b,) = mlflow_runs_of(mlflow, b)
    assert run_b.info.status == "KILLED"
    epochs_b = steps(mlflow, run_b.info.run_id, "dev_f1")
    assert epochs_b == list(range(1, len(epochs_b) + 1)) and len(epochs_b) < 200, epochs_b  # resumed, not restarted
    logs_b = runs.logs(b)
    # Who carried the cancel out depends on how the outage went for the worker: its cancellation observer either
    # reconnected (then the worker stopped the process) or gave up for good, and then the attempt's own watch did.
    observer_gave_up = any("Cancellation observer failed" in worker.log(1_000_000) for worker in (cpu_b, cpu_c))
    if observer_gave_up:
        assert any(m.startswith("the flow run has been Cancelling for 30 s") for m in logs_b), logs_b[-20:]

    # Nothing else changed in the registry: two new versions, A's and C's.
    versions_after = {v.version for v in mlflow.search_model_versions(f"name = '{MODEL}'")}
    assert len(versions_after - versions_before) == 2
    print("fault history A:", history_a, "\nfault history B:", history_b, "\nfault history C:", runs.history(c))
