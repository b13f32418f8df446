"""The production topology, end to end, as the README's "Production" section runs it, on 127.0.0.1 only:

    PostgreSQL -> Prefect server behind its role-aware gateway, and MLflow tracking server with authentication
                  (artifacts proxied to S3) ; moto's S3 server for MinIO, enforcing one IAM policy per role
    operator:  dvc push -r storage ; python -m flows.provision ; python -m flows.provision_mlflow ;
               prefect --no-prompt deploy --all
    worker:    `prefect worker start --pool gpu` from an empty directory, in a virtualenv with the locked
               dependencies and without this repository: the code arrives by the deployment's git_clone pull step,
               the data by DVC from S3, the contexts through the S3 context cache, task results go to S3
    user:      prefect deployment run train-shapca/gpu (a small CPU override), as the operator -> the worker, holding
               only the trainer's credentials, completes, registers, promotes
    consumer:  a fresh virtualenv with only the model's own requirements.txt and the consumer's MLflow user loads
               models:/shapca-twitter2017@champion through the tracking server and predicts, then
               `mlflow models serve` of that URI from the same virtualenv answers a POST

The servers, S3 and the operator's steps come from the session's shared stack (`production_stack`,
tests/production_topology.py), which the fault and access tests use too. This test runs first on it (files run in name
order), so its run is the registry's first version and becomes champion. Every process the test starts is stopped by
pid with its children; the stack stops the rest at the end of the session.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect_harness import flow_run_id_from
from production_topology import ProductionStack, consumer_venv, run_checked, s3_keys, start_process, wait_http

from components.common.net import free_port

pytestmark = pytest.mark.slow

MODEL = "shapca-twitter2017"
TINY_CPU = [
    "train.device=cpu",
    "train.precision=fp32",
    "train.epochs=1",
    "train.batch_size=16",
    "data.max_examples={train: 48, dev: 24, test: 24}",
    "model.text_encoder=minilm",
    "model.permutations=8",
    "tracking.allow_partial_dev=true",  # a capped dev split: promotable only because the run says so
]
ROW = {
    "text": "Obama visits the Golden Gate Bridge in San Francisco",
    "context": "a man in a suit standing in front of a red bridge",
}


@pytest.mark.timeout(2700)  # about 5 minutes on an idle 2-core machine (stack included); the bound is for a loaded one
def test_production_topology_end_to_end(production_stack: ProductionStack, tmp_path, monkeypatch):
    stack, penv = production_stack, production_stack.penv
    timings = dict(stack.timings)
    t_start = time.monotonic()

    # The operator's steps (done by the stack): data in the S3 remote, pools and result storage, the deployments.
    assert s3_keys(stack.s3, "dvc/files/md5/"), "dvc push wrote nothing to s3://shapca/dvc"
    provision = stack.operator_output["provision"]
    assert "work pool gpu" in provision and "remote-file-system/shapca-results" in provision, provision
    # One training at a time on the GPU pool, whichever deployment starts it (issue 21); the CPU pool is unbounded.
    pools = {p["name"]: p["concurrency_limit"] for p in stack.penv.api("POST", "/work_pools/filter", {})}
    assert (pools["gpu"], pools["cpu"]) == (1, None), pools
    provision_mlflow = stack.operator_output["provision_mlflow"]
    assert f"mlflow registered model {MODEL}: created" in provision_mlflow, provision_mlflow
    assert "mlflow role shapca-trainer: experiment * EDIT, registered_model * EDIT" in provision_mlflow
    deployments = stack.deployments()
    assert {
        ("train-shapca", "gpu"),
        ("train-shapca", "cpu"),
        ("train-shapca", "weekly-retrain"),
        ("validate-data", "default"),
        ("evaluate-model", "default"),
        ("score-tweets", "default"),
        ("generate-contexts", "gpu"),
    } <= set(deployments)
    weekly = deployments[("train-shapca", "weekly-retrain")]
    assert [(s["schedule"]["cron"], s["schedule"]["timezone"]) for s in weekly["schedules"]] == [("0 3 * * 1", "UTC")]
    gpu = deployments[("train-shapca", "gpu")]
    assert gpu["work_pool_name"] == "gpu"
    assert gpu["parameters"]["config"]["train"] == {"device": "cuda", "precision": "bf16", "num_gpus": 1}
    assert gpu["job_variables"]["env"]["SHAPCA_DVC_REMOTE"] == "storage"
    clone_step = gpu["pull_steps"][0]["prefect.deployments.steps.git_clone"]
    assert clone_step["repository"] in (str(stack.repo), "{{ $SHAPCA_REPO_URL }}")
    assert str(stack.project_root) not in json.dumps(gpu["pull_steps"]), "a pull step names the deploying host"

    # The worker: an empty directory, a virtualenv without the project, everything else from outside.
    worker, workdir = stack.start_worker("gpu")
    probe = subprocess.run(
        [str(stack.worker_bin / "python"), "-c", "import components"],
        cwd=workdir,
        env=stack.env("trainer"),
        capture_output=True,
        text=True,
    )
    assert probe.returncode != 0 and "No module named 'components'" in probe.stderr, probe

    serve = None
    try:
        # The user.
        t0 = time.monotonic()
        run = penv.cli(
            "deployment",
            "run",
            "train-shapca/gpu",
            "--params",
            json.dumps({"overrides": TINY_CPU}),
            "--watch",
            "--watch-timeout",
            "1500",  # 2-3 minutes idle; 10+ when other jobs load the 2 cores
            cwd=tmp_path,
            timeout=1560,
        )
        timings["flow_run_s"] = time.monotonic() - t0
        flow_run_id = flow_run_id_from(run.stdout)
        flow_run = penv.flow_run(flow_run_id)
        assert flow_run["state"]["type"] == "COMPLETED", f"{flow_run['state']}\n{worker.log(12000)}"
        assert list(workdir.iterdir()) == [], "the flow run wrote into the worker's directory"

        # Everything shared went through S3.
        assert s3_keys(stack.s3, "contexts/records/"), "no context record in the S3 context cache"
        assert s3_keys(stack.s3, "prefect-results/"), "no task result in the S3 result storage"
        assert s3_keys(stack.s3, "mlflow/"), "no MLflow artifact in s3://shapca/mlflow"

        # A person watching the run sees the epochs: log lines from the flow and from the library, and progress.
        messages = [
            entry["message"]
            for entry in penv.api(
                "POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}
            )
        ]
        assert any(m.startswith("epoch 1/1: ") and "dev_f1=" in m for m in messages), messages
        assert any(m.startswith("epoch 1: ") for m in messages), "the library's epoch line is not in the logs"
        progress = penv.api(
            "POST", "/artifacts/filter", {"artifacts": {"key": {"any_": ["training-progress-twitter2017"]}}}
        )
        assert progress and progress[0]["type"] == "progress" and float(progress[0]["data"]) == 100.0

        # Read back as the watcher (read-only MLflow user): MLflow's client takes the credentials from the environment.
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            monkeypatch.setenv(key, stack.env("watcher")[key])
        client = MlflowClient(tracking_uri=stack.tracking_uri, registry_uri=stack.tracking_uri)
        champion = client.get_model_version_by_alias(MODEL, "champion")
        mlflow_run = client.get_run(champion.run_id)
        assert mlflow_run.info.status == "FINISHED"
        assert mlflow_run.data.params["train.device"] == "cpu"
        assert mlflow_run.data.tags.get("mlflow.source.git.commit", stack.commit) == stack.commit

        # The consumer: only the model's requirements, only MLFLOW_TRACKING_URI.
        consumer_env = stack.env("consumer")
        run_checked(
            [
                str(Path(sys.executable).with_name("mlflow")),
                "artifacts",
                "download",
                "-u",
                f"models:/{MODEL}@champion/requirements.txt",
                "-d",
                str(tmp_path / "model-req"),
            ],
            consumer_env,
            tmp_path,
        )
        requirements = tmp_path / "model-req" / "requirements.txt"
        pins = requirements.read_text()
        assert "torch==" in pins and "transformers==" in pins and "shapca" not in pins, pins
        t0 = time.monotonic()
        stack.consumer_prefetch.result(timeout=900)
        consumer_bin = consumer_venv(stack.root / "consumer-venv", requirements, stack.logs)
        timings["consumer_venv_s"] = time.monotonic() - t0  # the wait for the prefetch, then the model's pins
        consumer_dir = tmp_path / "consumer"
        consumer_dir.mkdir()
        consumer_env.update(PATH=f"{consumer_bin}:/usr/bin:/bin", HOME=str(consumer_dir), OMP_NUM_THREADS="2")
        script = (
            "import importlib.util, json, mlflow, pandas as pd\n"
            "assert importlib.util.find_spec('components') is None, 'the project is installed here'\n"
            f"model = mlflow.pyfunc.load_model('models:/{MODEL}@champion')\n"
            f"print(json.dumps(model.predict(pd.DataFrame([{ROW!r}]))))\n"
        )
        loaded = subprocess.run(
            [str(consumer_bin / "python"), "-c", script],
            cwd=consumer_dir,
            env=consumer_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert loaded.returncode == 0, loaded.stderr[-4000:]
        predictions = json.loads(loaded.stdout.strip().splitlines()[-1])
        assert len(predictions) == 1 and predictions[0]["error"] is None
        assert isinstance(predictions[0]["entities"], list)

        port = free_port()
        serve = start_process(
            "serve",
            [
                str(consumer_bin / "mlflow"),
                "models",
                "serve",
                "-m",
                f"models:/{MODEL}@champion",
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            consumer_env,
            consumer_dir,
            stack.logs,
        )
        wait_http(f"http://127.0.0.1:{port}/ping", serve, timeout=300)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"dataframe_records": [ROW]}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            served = json.load(response)["predictions"]
        assert served == predictions
        timings["test_s"] = time.monotonic() - t_start
        print("production topology timings:", {k: round(v, 1) for k, v in timings.items()})
    finally:
        worker.stop()
        if serve is not None:
            serve.stop()
    assert not worker.alive()
