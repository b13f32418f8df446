"""A DVC S3 remote on moto: configure, push, lose the cache and the file, pull back the same bytes."""

from __future__ import annotations

import os
import shutil
import subprocess

import boto3
import pytest
from s3_fixtures import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, S3TestEnv, moto_endpoint, s3_env  # noqa: F401

from components.storage.dvc_remote import (
    DvcRemoteError,
    check_config_local_ignored,
    check_no_credentials_in_config,
    configure_s3_remote,
    run_dvc,
)


@pytest.fixture
def dvc_repo(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    run_dvc(repo, "init", "-q")
    return repo


def test_push_and_pull_through_an_s3_remote_with_an_endpoint_override(s3_env: S3TestEnv, dvc_repo, monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL", "SHAPCA_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name)  # only the endpointurl written to .dvc/config can lead dvc to moto
    payload = os.urandom(64 * 1024) + b"\nshapca\n"
    (dvc_repo / "data.bin").write_bytes(payload)
    run_dvc(dvc_repo, "add", "-q", "data.bin")

    configure_s3_remote(dvc_repo, "minio", f"s3://{s3_env.bucket}/dvcstore", endpoint_url=s3_env.endpoint_url,
                        default=True)
    config = (dvc_repo / ".dvc" / "config").read_text()
    assert f"url = s3://{s3_env.bucket}/dvcstore" in config
    assert f"endpointurl = {s3_env.endpoint_url}" in config
    assert "remote = minio" in config
    assert FAKE_ACCESS_KEY_ID not in config and FAKE_SECRET_ACCESS_KEY not in config
    assert not (dvc_repo / ".dvc" / "config.local").exists()

    run_dvc(dvc_repo, "push", "-q")
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=s3_env.endpoint_url, region_name="us-east-1")
            .list_objects_v2(Bucket=s3_env.bucket, Prefix="dvcstore/")["Contents"]]
    assert len(keys) == 1 and keys[0].startswith("dvcstore/files/md5/")  # DVC 3's content-addressed layout

    shutil.rmtree(dvc_repo / ".dvc" / "cache")
    (dvc_repo / "data.bin").unlink()
    run_dvc(dvc_repo, "pull", "-q")
    assert (dvc_repo / "data.bin").read_bytes() == payload


def test_reconfiguring_a_remote_replaces_it(s3_env: S3TestEnv, dvc_repo):
    configure_s3_remote(dvc_repo, "store", "s3://first-bucket/x", endpoint_url="http://127.0.0.1:1")
    configure_s3_remote(dvc_repo, "store", f"s3://{s3_env.bucket}/y", region="eu-west-1")
    config = (dvc_repo / ".dvc" / "config").read_text()
    assert "first-bucket" not in config and "endpointurl" not in config
    assert "region = eu-west-1" in config


def test_credentials_in_the_committed_config_are_refused(dvc_repo):
    configure_s3_remote(dvc_repo, "store", "s3://bucket/x")
    run_dvc(dvc_repo, "remote", "modify", "--project", "store", "secret_access_key", "oops")  # a user's mistake
    with pytest.raises(DvcRemoteError, match=r"\.dvc/config \['remote \"store\"'\] holds secret_access_key"):
        check_no_credentials_in_config(dvc_repo)
    with pytest.raises(DvcRemoteError, match="holds secret_access_key"):
        configure_s3_remote(dvc_repo, "other", "s3://bucket/y")


def test_config_local_must_be_git_ignored_and_urls_must_be_s3(dvc_repo, tmp_path):
    check_config_local_ignored(dvc_repo)  # `dvc init` writes it
    (dvc_repo / ".dvc" / ".gitignore").write_text("/tmp\n/cache\n")
    with pytest.raises(DvcRemoteError, match="must list /config.local"):
        configure_s3_remote(dvc_repo, "store", "s3://bucket/x")
    with pytest.raises(ValueError, match="must start with s3://"):
        configure_s3_remote(dvc_repo, "store", "/local/dir")
    with pytest.raises(DvcRemoteError, match="not a DVC repository"):
        configure_s3_remote(tmp_path / "nowhere", "store", "s3://bucket/x")


def test_dvc_failures_carry_dvcs_message(dvc_repo):
    with pytest.raises(DvcRemoteError, match=r"`dvc remote modify --project missing endpointurl x` failed .*missing"):
        run_dvc(dvc_repo, "remote", "modify", "--project", "missing", "endpointurl", "x")
