"""The production topology, end to end, as the README's "Production" section runs it, on 127.0.0.1 only:

    PostgreSQL -> Prefect server and MLflow tracking server (artifacts proxied to S3) ; moto's S3 server for MinIO
    operator:  dvc push -r storage ; python -m flows.provision ; prefect --no-prompt deploy --all
    worker:    `prefect worker start --pool gpu` from an empty directory, in a virtualenv with the locked
               dependencies and without this repository: the code arrives by the deployment's git_clone pull step,
               the data by DVC from S3, the contexts through the S3 context cache, task results go to S3
    user:      prefect deployment run train-shapca/gpu (a small CPU override) -> completes, registers, promotes
    consumer:  a fresh virtualenv with only the model's own requirements.txt loads
               models:/shapca-twitter2017@champion through the tracking server and predicts, then
               `mlflow models serve` of that URI from the same virtualenv answers a POST

Every process is stopped by pid with its children, the databases and the role are dropped, and PostgreSQL is
stopped only if the test started it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
from prefect_harness import flow_run_id_from, make_env, start_server
from production_topology import (
    BUCKET,
    aws_env,
    consumer_venv,
    postgres_databases,
    prefetch_consumer_venv,
    snapshot_repository,
    start_mlflow_server,
    start_moto,
    start_process,
    wait_http,
    worker_venv,
)

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


def _keys(s3, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


@pytest.mark.timeout(1800)  # about 5 minutes on an idle 2-core machine; the bound is for a loaded one
def test_production_topology_end_to_end(project_root, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    base_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "MLFLOW_", "AWS_", "SHAPCA_", "VIRTUAL_ENV", "PYTHONPATH"))
    }
    processes = []
    timings: dict[str, float] = {}
    t_start = time.monotonic()
    with postgres_databases() as dbs:
        consumer_prefetch = prefetch_consumer_venv(tmp_path / "consumer-venv", logs)
        try:
            moto, endpoint = start_moto(base_env, logs)
            processes.append(moto)
            s3_env = aws_env(tmp_path, endpoint)
            s3 = boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id=s3_env["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=s3_env["AWS_SECRET_ACCESS_KEY"],
            )
            s3.create_bucket(Bucket=BUCKET)

            # Servers: Prefect and MLflow, both on PostgreSQL; MLflow holds the only S3 credentials consumers need.
            penv = make_env(
                tmp_path / "operator",
                free_port(),
                {
                    **{k: v for k, v in base_env.items() if k not in ("HOME",)},
                    **s3_env,
                    "PREFECT_SERVER_DATABASE_CONNECTION_URL": dbs.prefect_url,
                    "HOME": os.environ.get("HOME", str(tmp_path)),
                },
            )
            _, timings["prefect_server_s"] = start_server(penv, cwd=tmp_path, timeout=180)
            processes.extend(penv.processes)
            mlflow_server, tracking_uri = start_mlflow_server({**base_env, **s3_env}, dbs.mlflow_url, logs)
            processes.append(mlflow_server)
            timings["servers_s"] = time.monotonic() - t_start

            # The operator, from the checkout: data to the S3 remote, the code to git, the server provisioned.
            repo = tmp_path / "git" / "shapca-ops.git"
            repo.parent.mkdir()
            commit = snapshot_repository(project_root, repo)
            operator = {**penv.env, "MLFLOW_TRACKING_URI": tracking_uri, "SHAPCA_REPO_URL": str(repo)}
            t0 = time.monotonic()
            _run([str(Path(sys.executable).with_name("dvc")), "push", "-r", "storage"], operator, project_root)
            timings["dvc_push_s"] = time.monotonic() - t0
            assert _keys(s3, "dvc/files/md5/"), "dvc push wrote nothing to s3://shapca/dvc"
            provision = _run([sys.executable, "-m", "flows.provision"], operator, project_root)
            assert "work pool gpu" in provision and "remote-file-system/shapca-results" in provision, provision
            t0 = time.monotonic()
            penv.env.update(operator)
            penv.cli("deploy", "--all", cwd=project_root, timeout=180)
            timings["deploy_s"] = time.monotonic() - t0
            deployments = _deployments(penv)
            assert {
                ("train-shapca", "gpu"),
                ("train-shapca", "cpu"),
                ("train-shapca", "weekly-retrain"),
                ("validate-data", "default"),
                ("evaluate-model", "default"),
                ("generate-contexts", "gpu"),
            } <= set(deployments)
            weekly = deployments[("train-shapca", "weekly-retrain")]
            assert [(s["schedule"]["cron"], s["schedule"]["timezone"]) for s in weekly["schedules"]] == [
                ("0 3 * * 1", "UTC")
            ]
            gpu = deployments[("train-shapca", "gpu")]
            assert gpu["work_pool_name"] == "gpu"
            assert gpu["parameters"]["config"]["train"] == {"device": "cuda", "precision": "bf16", "num_gpus": 1}
            assert gpu["job_variables"]["env"]["SHAPCA_DVC_REMOTE"] == "storage"
            clone_step = gpu["pull_steps"][0]["prefect.deployments.steps.git_clone"]
            assert clone_step["repository"] in (str(repo), "{{ $SHAPCA_REPO_URL }}")
            assert str(project_root) not in json.dumps(gpu["pull_steps"]), "a pull step names the deploying host"

            # The worker: an empty directory, a virtualenv without the project, everything else from outside.
            worker_bin = worker_venv(tmp_path / "worker-venv")
            workdir = tmp_path / "worker"
            workdir.mkdir()
            worker_env = {
                **base_env,
                **s3_env,
                "PATH": f"{worker_bin}:{base_env.get('PATH', '/usr/bin:/bin')}",
                "VIRTUAL_ENV": str(worker_bin.parent),
                "PREFECT_API_URL": penv.api_url,
                "PREFECT_HOME": str(tmp_path / "worker-prefect-home"),
                "MLFLOW_TRACKING_URI": tracking_uri,
                "SHAPCA_REPO_URL": str(repo),
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "OMP_NUM_THREADS": "2",
                "NO_COLOR": "1",
            }
            probe = subprocess.run(
                [str(worker_bin / "python"), "-c", "import components"],
                cwd=workdir,
                env=worker_env,
                capture_output=True,
                text=True,
            )
            assert probe.returncode != 0 and "No module named 'components'" in probe.stderr, probe
            worker = start_process(
                "worker-gpu",
                [str(worker_bin / "prefect"), "worker", "start", "--pool", "gpu", "--limit", "1"],
                worker_env,
                workdir,
                logs,
            )
            processes.append(worker)

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
                "600",
                cwd=tmp_path,
                timeout=660,
            )
            timings["flow_run_s"] = time.monotonic() - t0
            flow_run_id = flow_run_id_from(run.stdout)
            flow_run = penv.flow_run(flow_run_id)
            assert flow_run["state"]["type"] == "COMPLETED", f"{flow_run['state']}\n{worker.log(12000)}"
            assert list(workdir.iterdir()) == [], "the flow run wrote into the worker's directory"

            # Everything shared went through S3.
            assert _keys(s3, "contexts/records/"), "no context record in the S3 context cache"
            assert _keys(s3, "prefect-results/"), "no task result in the S3 result storage"
            assert _keys(s3, "mlflow/"), "no MLflow artifact in s3://shapca/mlflow"

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

            from mlflow import MlflowClient

            client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            champion = client.get_model_version_by_alias(MODEL, "champion")
            mlflow_run = client.get_run(champion.run_id)
            assert mlflow_run.info.status == "FINISHED"
            assert mlflow_run.data.params["train.device"] == "cpu"
            assert mlflow_run.data.tags.get("mlflow.source.git.commit", commit) == commit

            # The consumer: only the model's requirements, only MLFLOW_TRACKING_URI.
            _run(
                [
                    str(Path(sys.executable).with_name("mlflow")),
                    "artifacts",
                    "download",
                    "-u",
                    f"models:/{MODEL}@champion/requirements.txt",
                    "-d",
                    str(tmp_path / "model-req"),
                ],
                operator,
                tmp_path,
            )
            requirements = tmp_path / "model-req" / "requirements.txt"
            pins = requirements.read_text()
            assert "torch==" in pins and "transformers==" in pins and "shapca" not in pins, pins
            t0 = time.monotonic()
            consumer_prefetch.result(timeout=900)
            consumer_bin = consumer_venv(tmp_path / "consumer-venv", requirements, logs)
            timings["consumer_venv_s"] = time.monotonic() - t0  # the wait for the prefetch, then the model's pins
            consumer_dir = tmp_path / "consumer"
            consumer_dir.mkdir()
            consumer_env = {
                "PATH": f"{consumer_bin}:/usr/bin:/bin",
                "HOME": str(consumer_dir),
                "MLFLOW_TRACKING_URI": tracking_uri,
                "HF_HUB_OFFLINE": "1",
                "OMP_NUM_THREADS": "2",
            }
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
                logs,
            )
            processes.append(serve)
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
            timings["total_s"] = time.monotonic() - t_start
            print("production topology timings:", {k: round(v, 1) for k, v in timings.items()})
        finally:
            for proc in reversed(processes):
                proc.stop()
    assert all(not p.alive() for p in processes)


def _run(args: list[str], env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise AssertionError(
            f"`{' '.join(args)}` exited {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result.stdout


def _deployments(penv) -> dict[tuple[str, str], dict]:
    flows = {f["id"]: f["name"] for f in penv.api("POST", "/flows/filter", {})}
    return {(flows[d["flow_id"]], d["name"]): d for d in penv.api("POST", "/deployments/filter", {})}
