"""An S3 endpoint for tests: moto's standalone server on 127.0.0.1, reached through real boto3, DVC and MLflow.

conftest.py registers this module as a plugin (`pytest_plugins`), so every test module can ask for `moto_endpoint`
and `s3_env`; import `S3TestEnv` for annotations (pytest puts tests/ on sys.path because it has no __init__.py).
The server runs in a thread of the test process, so subprocesses (dvc) reach it over real HTTP too.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

# Fake credentials: moto accepts any; they exist only inside the tests' environment (set through monkeypatch).
FAKE_ACCESS_KEY_ID = "testing-access-key-id"
FAKE_SECRET_ACCESS_KEY = "testing-secret-access-key-0123456789"


@dataclass(frozen=True)
class S3TestEnv:
    endpoint_url: str
    bucket: str  # created empty for the one test that asked for it


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one INFO line per request would bury failures
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # port 0: the OS picks a free port
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> S3TestEnv:
    """Env pointing every S3 client (boto3, dvc-s3, MLflow) at moto, plus a fresh bucket for this test."""
    import boto3

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "SHAPCA_S3_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    # No ~/.aws settings leak into a test. An empty regular file, not /dev/null: dvc-s3 rejects a non-file.
    empty = tmp_path_factory.mktemp("aws") / "empty-config"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("SHAPCA_S3_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", moto_endpoint)

    bucket = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    monkeypatch.setenv("SHAPCA_S3_BUCKET", bucket)
    return S3TestEnv(endpoint_url=moto_endpoint, bucket=bucket)
