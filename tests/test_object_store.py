"""Object stores under an S3 policy (components/common/object_store.py): a delete the store refuses is an error that
names the objects, never a silent no-op; a prefix policy that allows deleting works with every S3 flavour.

moto's own server in a process of its own, with IAM switched on and the trainer's policy from infra/minio/policies
(tests/production_topology.py), reached through real boto3. Its batch DeleteObjects is authorized against the bucket,
not each key (real S3 and MinIO check each key), which is the case a per-key fallback exists for."""

from __future__ import annotations

import pytest
from production_topology import BOOTSTRAP_AWS, aws_env, enforce_s3_iam, start_moto

from components.common.object_store import open_store


@pytest.fixture(scope="module")
def iam_moto(tmp_path_factory):
    import os

    logs = tmp_path_factory.mktemp("moto-iam")
    proc, endpoint = start_moto({**os.environ, **BOOTSTRAP_AWS}, logs)
    try:
        yield endpoint, enforce_s3_iam(endpoint)
    finally:
        proc.stop()


@pytest.fixture
def as_trainer(iam_moto, tmp_path, monkeypatch):
    endpoint, keys = iam_moto
    for name, value in aws_env(tmp_path, endpoint, keys["trainer"]).items():
        monkeypatch.setenv(name, value)
    return keys


def test_deletes_under_a_prefix_policy_happen(as_trainer, tmp_path):
    store = open_store("s3://shapca/checkpoints/flow-run-x")
    for name in ("LATEST.json", "epochs/000001/last/a", "epochs/000002/last/a"):
        store.put_bytes(name, b"1")
    store.delete(["epochs/000001/last/a", "no/such/object"])
    assert store.list() == ["LATEST.json", "epochs/000002/last/a"]
    store.delete(store.list())
    assert store.list() == []


def test_a_refused_delete_names_every_object_left(iam_moto, as_trainer):
    import boto3

    endpoint, keys = iam_moto
    admin = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=keys["admin"][0], aws_secret_access_key=keys["admin"][1]
    )
    for name in ("a", "b"):
        admin.put_object(Bucket="shapca", Key=f"dvc/files/md5/{name}", Body=b"data")
    store = open_store("s3://shapca/dvc/files/md5")  # the trainer may read DVC's cache, never delete from it
    with pytest.raises(OSError, match=r"could not delete 2 object\(s\): s3://shapca/dvc/files/md5/a \(AccessDenied\)"):
        store.delete(["a", "b"])
    assert store.list() == ["a", "b"]
