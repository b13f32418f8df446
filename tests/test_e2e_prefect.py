"""End to end, the users' own commands: a Prefect server, `prefect deploy --all`, a process worker on pool gpu, and
`prefect deployment run train-shapca/gpu` on a tiny CPU config over a real subset of Twitter-2017 with BLIP-2
contexts; then the MLflow run, its metrics and the registered champion version must exist.

Everything the run writes (Prefect database and results, MLflow store, checkpoints, context cache) lives in tmp_path;
every process the test starts is stopped by pid, with its children, whatever happens.
"""

from __future__ import annotations

import json
import time

import pytest

from prefect_harness import flow_run_id_from, free_port, make_env, start_server, start_worker

pytestmark = pytest.mark.slow

TINY_CPU = [
    "train.device=cpu",
    "train.precision=fp32",
    "train.epochs=1",
    "train.batch_size=16",
    "data.max_examples={train: 48, dev: 24, test: 24}",
    "tracking.allow_partial_dev=true",  # the capped dev split may promote (registry rule, issue 14)
    "model.text_encoder=minilm",
    "model.permutations=8",
]


def test_deploy_and_run_train_shapca_gpu_deployment(project_root, data_dir, tmp_path):
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    (tmp_path / "mlflow").mkdir()
    penv = make_env(tmp_path, free_port(), {"MLFLOW_TRACKING_URI": tracking_uri, "HF_HUB_OFFLINE": "1",
                                            "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "2"})
    timings: dict[str, float] = {}
    try:
        _, timings["server_healthy_s"] = start_server(penv, cwd=tmp_path)

        t0 = time.monotonic()
        penv.cli("work-pool", "create", "gpu", "--type", "process", cwd=project_root)
        penv.cli("work-pool", "create", "cpu", "--type", "process", cwd=project_root)
        deploy = penv.cli("deploy", "--all", cwd=project_root, timeout=180)
        timings["deploy_s"] = time.monotonic() - t0
        deployments = {(d["flow_name"], d["name"]): d for d in _deployments(penv)}
        assert {("train-shapca", "gpu"), ("train-shapca", "cpu"), ("train-shapca", "weekly-retrain"),
                ("validate-data", "default"), ("evaluate-model", "default")} <= set(deployments), deploy.stdout
        gpu = deployments[("train-shapca", "gpu")]
        assert gpu["work_pool_name"] == "gpu"
        assert gpu["parameters"]["config"]["train"] == {"device": "cuda", "precision": "bf16", "num_gpus": 1}
        # The pull step takes every flow run to this checkout, wherever it was deployed from.
        assert gpu["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(project_root)}}
        ]
        weekly = deployments[("train-shapca", "weekly-retrain")]
        assert [s["schedule"]["cron"] for s in weekly["schedules"]] == ["0 3 * * 1"]
        assert weekly["schedules"][0]["schedule"]["timezone"] == "UTC"

        # A worker started elsewhere: the pull step, not its cwd, decides where the flow runs.
        worker = start_worker(penv, "gpu", cwd=tmp_path)
        params = {
            "overrides": TINY_CPU + [f"train.output_dir={tmp_path / 'outputs'}"],
            "contexts": {"backend": "precomputed", "generator": "blip2", "cache_dir": str(tmp_path / "contexts")},
        }
        t0 = time.monotonic()
        run = penv.cli("deployment", "run", "train-shapca/gpu", "--params", json.dumps(params),
                       "--watch", "--watch-timeout", "240", cwd=tmp_path, timeout=270)
        timings["run_s"] = time.monotonic() - t0
        flow_run = penv.flow_run(flow_run_id_from(run.stdout))
        assert flow_run["state"]["type"] == "COMPLETED", f"{flow_run['state']}\n{worker.log()}"
        print("e2e timings:", {k: round(v, 1) for k, v in timings.items()})

        artifacts = {a["key"] for a in penv.api("POST", "/artifacts/filter", {}) if a.get("key")}
        assert {"validation-twitter2017", "training-twitter2017", "contexts-twitter2017-blip2"} <= artifacts
        training = penv.api("POST", "/artifacts/filter", {"artifacts": {"key": {"any_": ["training-twitter2017"]}}})
        assert "shapca-twitter2017 v1 -> champion" in training[0]["data"]
    finally:
        penv.stop_all()
    assert all(not p.alive() for p in penv.processes)

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    experiment = client.get_experiment_by_name("shapca")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    mlflow_run = runs[0]
    assert mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.params["train.device"] == "cpu"
    assert mlflow_run.data.params["data.dataset"] == "twitter2017"
    assert mlflow_run.data.params["data.test_size"] == "24"
    for metric in ("test_f1", "test_precision", "test_recall", "dev_f1"):
        assert 0.0 <= mlflow_run.data.metrics[metric] <= 1.0, metric
    champion = client.get_model_version_by_alias("shapca-twitter2017", "champion")
    assert str(champion.version) == "1"
    assert champion.run_id == mlflow_run.info.run_id
    assert champion.tags["promotion"] == "champion"


def _deployments(penv) -> list[dict]:
    deployments = penv.api("POST", "/deployments/filter", {})
    flows = {f["id"]: f["name"] for f in penv.api("POST", "/flows/filter", {})}
    return [d | {"flow_name": flows[d["flow_id"]]} for d in deployments]
