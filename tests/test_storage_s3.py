"""components.storage.s3 against moto's S3 server through real boto3."""

from __future__ import annotations

import os

import boto3
import pytest
from pydantic import ValidationError
from s3_fixtures import FAKE_SECRET_ACCESS_KEY, S3TestEnv, moto_endpoint, s3_env  # noqa: F401

from components.storage.s3 import (
    MiB,
    S3BlobStore,
    S3Settings,
    S3StorageError,
    download_dir,
    download_file,
    ensure_bucket,
    exists,
    expected_etag,
    parse_s3_uri,
    upload_dir,
    upload_file,
)


def _raw(env: S3TestEnv):
    return boto3.client("s3", endpoint_url=env.endpoint_url, region_name="us-east-1")


def test_settings_read_env_in_documented_order_and_hold_no_credentials():
    env = {
        "AWS_ENDPOINT_URL": "http://aws-generic:1",
        "MLFLOW_S3_ENDPOINT_URL": "http://mlflow:2",
        "SHAPCA_S3_ENDPOINT_URL": "http://shapca:3",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "SHAPCA_S3_BUCKET": "shapca",
        "SHAPCA_S3_PREFIX": "/runs/",
        "AWS_ACCESS_KEY_ID": "AKIA-SHOULD-NOT-APPEAR",
        "AWS_SECRET_ACCESS_KEY": "secret-should-not-appear",
    }
    settings = S3Settings.from_env(env)
    assert (settings.endpoint_url, settings.region, settings.bucket, settings.prefix) == (
        "http://shapca:3", "eu-west-1", "shapca", "runs")
    # MLflow's variable alone is enough: one .env serves both.
    assert S3Settings.from_env({"MLFLOW_S3_ENDPOINT_URL": "http://mlflow:2"}).endpoint_url == "http://mlflow:2"
    assert S3Settings.from_env({}).endpoint_url is None
    dumped = repr(settings) + str(settings.model_dump())
    assert "should-not-appear" not in dumped.lower()
    with pytest.raises(ValidationError, match="aws_secret_access_key"):
        S3Settings(bucket="b", aws_secret_access_key="x")
    assert settings.uri("mlflow", "exp1/") == "s3://shapca/runs/mlflow/exp1"
    with pytest.raises(S3StorageError, match="SHAPCA_S3_BUCKET"):
        S3Settings().uri("x")


def test_parse_s3_uri_rejects_other_schemes():
    assert parse_s3_uri("s3://b/a/b.txt") == ("b", "a/b.txt")
    assert parse_s3_uri("s3://b") == ("b", "")
    with pytest.raises(ValueError, match="expected an s3://"):
        parse_s3_uri("/local/path")
    with pytest.raises(ValueError, match="no bucket"):
        parse_s3_uri("s3:///key")


def test_upload_and_download_dir_round_trip_and_skip_unchanged_files(s3_env: S3TestEnv, tmp_path):
    # 5 MiB parts so an 11 MiB file exercises the multipart ETag (3 parts) without a slow test.
    settings = S3Settings.from_env(multipart_threshold_mib=5, multipart_chunksize_mib=5)
    src = tmp_path / "src"
    (src / "nested" / "deeper").mkdir(parents=True)
    files = {
        "a.txt": b"alpha\n",
        "nested/b.json": b'{"b": 1}',
        "nested/deeper/empty.bin": b"",
        "big.bin": os.urandom(11 * MiB),
    }
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    uri = f"s3://{s3_env.bucket}/runs/1"
    # A sibling prefix that shares the string prefix must stay out of every listing.
    _raw(s3_env).put_object(Bucket=s3_env.bucket, Key="runs/10/other.txt", Body=b"not mine")

    first = upload_dir(src, uri, settings, progress=False)
    assert sorted(first.transferred) == sorted(files) and first.skipped == []
    assert first.bytes_transferred == sum(len(d) for d in files.values())
    head = _raw(s3_env).head_object(Bucket=s3_env.bucket, Key="runs/1/big.bin")
    assert head["ETag"].strip('"').endswith("-3")  # really multipart, and our recomputation matches it
    assert head["ETag"].strip('"') == expected_etag(src / "big.bin", settings)

    second = upload_dir(src, uri, settings, progress=False)
    assert second.transferred == [] and sorted(second.skipped) == sorted(files)

    (src / "a.txt").write_bytes(b"ALPHA\n")  # same size, new content: only the ETag can tell
    third = upload_dir(src, uri, settings, progress=False)
    assert third.transferred == ["a.txt"]

    dest = tmp_path / "dest"
    down = download_dir(uri, dest, settings, progress=False)
    assert sorted(down.transferred) == sorted(files)
    assert not (dest / "other.txt").exists()
    for rel in files:
        assert (dest / rel).read_bytes() == (src / rel).read_bytes(), rel

    again = download_dir(uri, dest, settings, progress=False)
    assert again.transferred == [] and sorted(again.skipped) == sorted(files)
    (dest / "nested" / "b.json").write_bytes(b'{"b": 2}')  # local edit is overwritten by the remote copy
    fixed = download_dir(uri, dest, settings, progress=False)
    assert fixed.transferred == ["nested/b.json"]
    assert (dest / "nested" / "b.json").read_bytes() == b'{"b": 1}'


def test_download_dir_errors_on_empty_prefix_and_on_keys_escaping_the_folder(s3_env: S3TestEnv, tmp_path):
    with pytest.raises(S3StorageError, match=f"no objects under s3://{s3_env.bucket}/nothing/"):
        download_dir(f"s3://{s3_env.bucket}/nothing", tmp_path / "d", progress=False)
    _raw(s3_env).put_object(Bucket=s3_env.bucket, Key="pre/../../escape.txt", Body=b"x")
    with pytest.raises(S3StorageError, match="resolves outside"):
        download_dir(f"s3://{s3_env.bucket}/pre", tmp_path / "d", progress=False)
    assert not (tmp_path / "escape.txt").exists()


def test_single_files_exists_and_errors_name_the_object(s3_env: S3TestEnv, tmp_path):
    local = tmp_path / "model.safetensors.txt"
    local.write_bytes(b"weights")
    uri = f"s3://{s3_env.bucket}/models/m.txt"
    assert not exists(uri)
    upload_file(local, uri)
    assert exists(uri)
    assert download_file(uri, tmp_path / "out" / "m.txt").read_bytes() == b"weights"

    missing = f"s3://{s3_env.bucket}/models/missing.txt"
    with pytest.raises(S3StorageError, match=f"{missing}: (404|NoSuchKey)"):
        download_file(missing, tmp_path / "x.txt")
    assert not (tmp_path / "x.txt").exists()
    with pytest.raises(S3StorageError, match="s3://no-such-bucket-here/k.txt: NoSuchBucket"):
        upload_file(local, "s3://no-such-bucket-here/k.txt")
    with pytest.raises(ValueError, match="must name an object key"):
        upload_file(local, f"s3://{s3_env.bucket}/folder/")


def test_missing_credentials_give_a_hint_and_never_echo_secrets(s3_env: S3TestEnv, monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup (and its timeouts)
    with pytest.raises(S3StorageError, match="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") as info:
        upload_dir(tmp_path, f"s3://{s3_env.bucket}/x", progress=False)
    assert FAKE_SECRET_ACCESS_KEY not in str(info.value)


def test_ensure_bucket_creates_once(s3_env: S3TestEnv):
    settings = S3Settings.from_env(bucket="fresh-bucket-for-ensure")
    assert ensure_bucket(settings) is True
    assert ensure_bucket(settings) is False
    names = [b["Name"] for b in _raw(s3_env).list_buckets()["Buckets"]]
    assert "fresh-bucket-for-ensure" in names


@pytest.mark.parametrize("conditional", [True, False], ids=["if-none-match", "head-then-put"])
def test_blob_store_is_write_once_under_its_prefix(s3_env: S3TestEnv, conditional: bool):
    store = S3BlobStore(S3Settings.from_env(prefix="cache/contexts", conditional_writes=conditional))
    sent_headers: list[dict[str, str | bytes]] = []
    store._client.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent_headers.append(dict(request.headers)))

    assert store.get("blip2/abc.json") is None
    assert store.put("blip2/abc.json", b"first") is True
    assert store.put("blip2/abc.json", b"second") is False  # never overwritten
    assert store.get("blip2/abc.json") == b"first"
    assert store.put("blip2/def.json", b"d") and store.put("owl/x.json", b"x")
    assert store.list() == ["blip2/abc.json", "blip2/def.json", "owl/x.json"]
    assert store.list("blip2/") == ["blip2/abc.json", "blip2/def.json"]
    raw = _raw(s3_env).get_object(Bucket=s3_env.bucket, Key="cache/contexts/blip2/abc.json")
    assert raw["Body"].read() == b"first"

    conditional_puts = [h for h in sent_headers if h.get("If-None-Match") in ("*", b"*")]
    # With conditional writes the second put is refused by the server itself (412), not by a prior HEAD.
    assert len(conditional_puts) == (4 if conditional else 0)
    assert len(sent_headers) == (4 if conditional else 3)


def test_blob_store_rejects_unsafe_keys(s3_env: S3TestEnv):
    store = S3BlobStore()
    for bad in ["", "/abs", "a/../b", "a//b", "./a"]:
        with pytest.raises(ValueError, match="invalid blob key"):
            store.put(bad, b"x")
