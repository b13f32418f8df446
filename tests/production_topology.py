"""The parts of the production topology for end-to-end tests, each a real process on 127.0.0.1:

- PostgreSQL 15 (the machine's own cluster): a throwaway role with a database for Prefect and one for MLflow;
- moto's S3 server in a process of its own (stands in for MinIO), with the bucket `shapca`;
- the MLflow tracking server on PostgreSQL, proxying artifacts to s3://shapca/mlflow (`--serve-artifacts`);
- virtual environments: a worker's (the locked dependencies, not this repository) and a consumer's (nothing but the
  model's own requirements).

Every helper undoes what it did, and only that: the cluster is stopped only if this module started it.
"""

from __future__ import annotations

import concurrent.futures
import secrets
import shutil
import site
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prefect_harness import ManagedProcess

from components.common.net import free_port

PG_VERSION, PG_CLUSTER = "15", "main"
BUCKET = "shapca"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "e2e-access-key-id",
    "AWS_SECRET_ACCESS_KEY": "e2e-secret-access-key-0123456789",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def start_process(name: str, args: list[str], env: dict[str, str], cwd: Path, logs: Path) -> ManagedProcess:
    log_path = logs / f"{name}.log"
    with open(log_path, "w", encoding="utf-8") as log:
        popen = subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return ManagedProcess(name, popen, log_path)


def wait_http(url: str, proc: ManagedProcess, timeout: float) -> float:
    """Seconds until `url` answers 200; fails with the process's log if it dies or the time runs out."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited {proc.popen.returncode}:\n{proc.log()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - t0
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"{proc.name}: {url} not answering after {timeout}s:\n{proc.log()}")


# ---------------------------------------------------------------------------------------------------------------------
# PostgreSQL


def _pg_running() -> bool:
    return subprocess.run(["pg_ctlcluster", PG_VERSION, PG_CLUSTER, "status"], capture_output=True).returncode == 0


def _psql(sql: str) -> None:
    subprocess.run(
        ["runuser", "-u", "postgres", "--", "psql", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
        check=True,
        capture_output=True,
        text=True,
        cwd="/",
    )


def _pg_port() -> int:
    out = subprocess.run(["pg_lsclusters", "-h"], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        version, cluster, port, *_ = line.split()
        if (version, cluster) == (PG_VERSION, PG_CLUSTER):
            return int(port)
    raise AssertionError(f"no PostgreSQL cluster {PG_VERSION}/{PG_CLUSTER} in `pg_lsclusters`:\n{out}")


@dataclass(frozen=True)
class Databases:
    prefect_url: str  # SQLAlchemy async URL for the Prefect server
    mlflow_url: str  # SQLAlchemy URL for the MLflow tracking server


@contextmanager
def postgres_databases() -> Iterator[Databases]:
    """A role and two databases on the local cluster (started if it was down, and then stopped again)."""
    if shutil.which("pg_ctlcluster") is None:
        raise AssertionError("PostgreSQL 15 is not installed (pg_ctlcluster missing): the production path needs it")
    started_here = not _pg_running()
    if started_here:
        subprocess.run(["pg_ctlcluster", PG_VERSION, PG_CLUSTER, "start"], check=True)
    role, password = f"shapca_e2e_{secrets.token_hex(4)}", secrets.token_hex(16)
    port = _pg_port()
    try:
        _psql(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        for db in ("prefect", "mlflow"):
            _psql(f"CREATE DATABASE {role}_{db} OWNER {role}")
        base = f"{role}:{password}@127.0.0.1:{port}/{role}"
        yield Databases(
            prefect_url=f"postgresql+asyncpg://{base}_prefect", mlflow_url=f"postgresql+psycopg2://{base}_mlflow"
        )
    finally:
        for db in ("prefect", "mlflow"):
            _psql(f"DROP DATABASE IF EXISTS {role}_{db} WITH (FORCE)")
        _psql(f"DROP ROLE IF EXISTS {role}")
        if started_here:
            subprocess.run(["pg_ctlcluster", PG_VERSION, PG_CLUSTER, "stop"], check=True)


# ---------------------------------------------------------------------------------------------------------------------
# S3 and the MLflow server


def aws_env(tmp: Path, endpoint: str) -> dict[str, str]:
    """What every S3 client of the stack reads (boto3, s3fs, dvc-s3, MLflow), with no ~/.aws settings leaking in."""
    empty = tmp / "aws-empty-config"
    empty.write_text("")
    return FAKE_AWS | {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_CONFIG_FILE": str(empty),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
    }


def start_moto(env: dict[str, str], logs: Path) -> tuple[ManagedProcess, str]:
    port = free_port()
    proc = start_process(
        "moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env, logs, logs
    )
    endpoint = f"http://127.0.0.1:{port}"
    wait_http(f"{endpoint}/moto-api/", proc, timeout=60)
    return proc, endpoint


def start_mlflow_server(env: dict[str, str], db_url: str, logs: Path) -> tuple[ManagedProcess, str]:
    port = free_port()
    args = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        db_url,
        "--artifacts-destination",
        f"s3://{BUCKET}/mlflow",
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    proc = start_process("mlflow-server", args, env, logs, logs)
    uri = f"http://127.0.0.1:{port}"
    wait_http(f"{uri}/health", proc, timeout=180)
    return proc, uri


# ---------------------------------------------------------------------------------------------------------------------
# Code delivery and virtual environments


def snapshot_repository(project_root: Path, bare: Path) -> str:
    """A bare git repository whose `main` is this working tree as it is now (tracked and new files that .gitignore
    lets through), so that a worker clones exactly the code under test; returns the commit id."""
    index = bare.parent / "snapshot.index"
    env = {
        "GIT_INDEX_FILE": str(index),
        "GIT_AUTHOR_NAME": "e2e",
        "GIT_AUTHOR_EMAIL": "e2e@127.0.0.1",
        "GIT_COMMITTER_NAME": "e2e",
        "GIT_COMMITTER_EMAIL": "e2e@127.0.0.1",
        "PATH": "/usr/bin:/bin",
    }

    def git(*args: str, cwd: Path = project_root) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
        ).stdout.strip()

    git("add", "-A", ".")  # into the private index only: the real index and HEAD are untouched
    commit = git("commit-tree", git("write-tree"), "-m", "working tree under test")
    index.unlink()
    git("init", "-q", "--bare", "-b", "main", str(bare), cwd=bare.parent)
    git("push", "-q", str(bare), f"{commit}:refs/heads/main")
    return commit


def worker_venv(path: Path) -> Path:
    """A virtualenv that sees the locked dependencies (this test's site-packages, through a path file) and not the
    project: the editable install's finder is a .pth hook, and .pth files are only run in real site directories.
    Returns its bin/ directory, which holds the `prefect` command."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    target = Path(
        subprocess.run(
            [str(path / "bin" / "python"), "-c", "import site; print(site.getsitepackages()[0])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (target / "locked-dependencies.pth").write_text(site.getsitepackages()[0] + "\n")
    bin_dir = path / "bin"
    (bin_dir / "prefect").write_text(
        f"#!{bin_dir / 'python'}\nimport sys\nfrom prefect.cli import app\nsys.exit(app())\n"
    )
    (bin_dir / "prefect").chmod(0o755)
    return bin_dir


def consumer_venv(path: Path, requirements: Path, logs: Path) -> Path:
    """A fresh virtualenv with the model's own requirements and nothing else; returns its bin/ directory. Idempotent:
    on a virtualenv made earlier (see `prefetch_consumer_venv`) pip installs only what the requirements add."""
    if not (path / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    bin_dir = path / "bin"
    log_path = logs / f"consumer-pip-{requirements.stem}.log"
    with open(log_path, "w", encoding="utf-8") as log:
        result = subprocess.run(
            [str(bin_dir / "pip"), "install", "-q", "-r", str(requirements)],
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=900,
        )
    if result.returncode != 0:
        raise AssertionError(f"pip install -r {requirements} failed:\n{log_path.read_text()[-4000:]}")
    return bin_dir


def prefetch_consumer_venv(path: Path, logs: Path) -> concurrent.futures.Future:
    """Start building the consumer's virtualenv in the background from the pins a logged model will carry
    (`serving_requirements()`), so its ~3 minutes of pip overlap the servers and the training. The consumer still
    installs the registered model's own requirements.txt afterwards (`consumer_venv` on the same path): whatever the
    prefetch guessed wrong is installed then, so the prefetch only saves time and proves nothing."""
    from components.serving.packaging import serving_requirements

    pins = logs / "prefetch-requirements.txt"
    pins.write_text("\n".join(serving_requirements()) + "\n")
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="consumer-venv")
    future = pool.submit(consumer_venv, path, pins, logs)
    pool.shutdown(wait=False)
    return future
