"""MLflow artifacts on S3: a sqlite tracking store, an experiment rooted at s3://, MLflow's own boto3 client on moto."""

from __future__ import annotations

import json

import boto3
from s3_fixtures import S3TestEnv, moto_endpoint, s3_env  # noqa: F401

from components.storage.s3 import S3Settings, download_dir, exists


def test_run_artifacts_go_to_s3_and_come_back(s3_env: S3TestEnv, tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # MLFLOW_S3_ENDPOINT_URL alone must lead both MLflow and components.storage to moto.
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.delenv("SHAPCA_S3_ENDPOINT_URL")
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=tracking_uri)
    artifact_root = S3Settings.from_env(prefix="mlflow").uri("shapca-s3-test")
    experiment_id = client.create_experiment("shapca-s3-test", artifact_location=artifact_root)
    assert client.get_experiment(experiment_id).artifact_location == artifact_root

    run = client.create_run(experiment_id)
    run_id = run.info.run_id
    report = tmp_path / "metrics.json"
    report.write_text(json.dumps({"dev_f1": 0.731, "test_f1": 0.702}))
    client.log_artifact(run_id, str(report), artifact_path="reports")
    checkpoint_dir = tmp_path / "checkpoint"
    checkpoint_dir.mkdir()
    (checkpoint_dir / "config.json").write_text('{"hidden": 384}')
    (checkpoint_dir / "weights.bin").write_bytes(bytes(range(256)) * 64)
    client.log_artifacts(run_id, str(checkpoint_dir), artifact_path="model")
    client.set_terminated(run_id)

    # The objects are in the bucket where the experiment said, written by MLflow through boto3 against moto.
    run_root = f"{artifact_root}/{run_id}/artifacts"
    assert exists(f"{run_root}/reports/metrics.json")
    bucket, key = s3_env.bucket, f"mlflow/shapca-s3-test/{run_id}/artifacts/reports/metrics.json"
    raw_client = boto3.client("s3", endpoint_url=s3_env.endpoint_url, region_name="us-east-1")
    raw = raw_client.get_object(Bucket=bucket, Key=key)
    assert raw["Body"].read() == report.read_bytes()
    assert sorted(a.path for a in client.list_artifacts(run_id, "model")) == ["model/config.json", "model/weights.bin"]

    # Back through MLflow's download path ...
    fetched = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="reports/metrics.json", dst_path=str(tmp_path / "dl"), tracking_uri=tracking_uri
    )
    assert json.loads(open(fetched).read()) == {"dev_f1": 0.731, "test_f1": 0.702}
    # ... and through components.storage, which must read what MLflow wrote.
    synced = download_dir(f"{run_root}/model", tmp_path / "synced", progress=False)
    assert sorted(synced.transferred) == ["config.json", "weights.bin"]
    for name in ("config.json", "weights.bin"):
        assert (tmp_path / "synced" / name).read_bytes() == (checkpoint_dir / name).read_bytes()
