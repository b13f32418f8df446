"""The production topology for end-to-end tests, each part a real process on 127.0.0.1:

- PostgreSQL 15 (the machine's own cluster): a throwaway role with a database for Prefect, one for MLflow and one for
  MLflow's users;
- moto's S3 server in a process of its own (stands in for MinIO), with the bucket `shapca`, enforcing IAM: one user
  per role with the policy of infra/minio/policies/ (the MinIO bootstrap's), created through moto's IAM API before
  authentication is switched on;
- the Prefect server behind the role-aware gateway (components/access/prefect_gateway.py), and the MLflow tracking
  server with authentication (`--app-name basic-auth`, workspaces on, infra/mlflow/basic_auth.ini), both on
  PostgreSQL, MLflow proxying artifacts to s3://shapca/mlflow (`--serve-artifacts`); every server can be stopped and
  started again on the same port (`Server`), for fault tests;
- virtual environments: a worker's (the locked dependencies, not this repository) and a consumer's (nothing but the
  model's own requirements).

`ProductionStack` is all of it with the operator's steps done (the code in a git repository the workers clone, the data
pushed to the S3 DVC remote, `python -m flows.provision`, `python -m flows.provision_mlflow`, `prefect deploy --all`),
as README "Production" runs them. Every credential is generated for the session (`Credentials`) and reaches a process
only through its environment; `stack.env(role)` is what a process of that role gets.
The session fixture `production_stack` (conftest registers this module as a plugin) builds it once for every test that
asks: the end-to-end test, the fault tests and the access tests share one stack, so its ~2 minutes of start-up are
paid once. Each test leaves the stack running and healthy (servers it stopped are started again) and makes no
assumption about what earlier tests registered.

Every helper undoes what it did, and only that: the cluster is stopped only if this module started it.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import secrets
import shutil
import site
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from prefect_harness import ManagedProcess, PrefectEnv, make_env

from components.common.net import free_port

PG_VERSION, PG_CLUSTER = "15", "main"
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"
BUCKET = "shapca"
REGION = {"AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
# moto accepts any key until IAM is switched on; these only create the users and the bucket before that.
BOOTSTRAP_AWS = {"AWS_ACCESS_KEY_ID": "bootstrap", "AWS_SECRET_ACCESS_KEY": "bootstrap-before-iam", **REGION}
INFRA = Path(__file__).resolve().parents[1] / "infra"
S3_POLICIES = INFRA / "minio" / "policies"  # shapca-<role>.json, the MinIO bootstrap's policies
MLFLOW_AUTH_INI = INFRA / "mlflow" / "basic_auth.ini"
# MLflow's clients download an artifact of an S3-backed proxy straight from S3 with a presigned URL when the server
# offers it (multipart download), which needs S3 reachable from every client, consumers included, and which moto
# cannot authenticate once IAM is on (it reads only the Authorization header). Every client of the stack turns it off,
# so artifacts come through the tracking server, under the caller's MLflow permission (README "Production").
PROXIED_DOWNLOADS = {"MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false"}
COMMANDS: list[list[str]] = []  # every command line the stack's helpers ran: the no-secret scan reads them


def start_process(name: str, args: list[str], env: dict[str, str], cwd: Path, logs: Path) -> ManagedProcess:
    COMMANDS.append(list(args))
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
    prefect_url: str  # SQLAlchemy async URL for the Prefect server (with the password: it is only ever in its env)
    mlflow_url: str  # SQLAlchemy URL for the MLflow tracking server, without the password (PGPASSWORD holds it)
    user: str
    host: str  # host:port
    mlflow_auth_db: str  # the database of MLflow's users and grants
    password: str


@contextmanager
def postgres_databases() -> Iterator[Databases]:
    """A role and three databases on the local cluster (started if it was down, and then stopped again)."""
    if shutil.which("pg_ctlcluster") is None:
        raise AssertionError("PostgreSQL 15 is not installed (pg_ctlcluster missing): the production path needs it")
    started_here = not _pg_running()
    if started_here:
        subprocess.run(["pg_ctlcluster", PG_VERSION, PG_CLUSTER, "start"], check=True)
    role, password = f"shapca_e2e_{secrets.token_hex(4)}", secrets.token_hex(16)
    port = _pg_port()
    try:
        _psql(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        for db in ("prefect", "mlflow", "mlflow_auth"):
            _psql(f"CREATE DATABASE {role}_{db} OWNER {role}")
        host = f"127.0.0.1:{port}"
        yield Databases(
            prefect_url=f"postgresql+asyncpg://{role}:{password}@{host}/{role}_prefect",
            mlflow_url=f"postgresql+psycopg2://{role}@{host}/{role}_mlflow",
            user=role,
            host=host,
            mlflow_auth_db=f"{role}_mlflow_auth",
            password=password,
        )
    finally:
        for db in ("prefect", "mlflow", "mlflow_auth"):
            _psql(f"DROP DATABASE IF EXISTS {role}_{db} WITH (FORCE)")
        _psql(f"DROP ROLE IF EXISTS {role}")
        if started_here:
            subprocess.run(["pg_ctlcluster", PG_VERSION, PG_CLUSTER, "stop"], check=True)


# ---------------------------------------------------------------------------------------------------------------------
# S3 and the MLflow server


def aws_env(tmp: Path, endpoint: str, key: tuple[str, str]) -> dict[str, str]:
    """What an S3 client of the stack reads (boto3, s3fs, dvc-s3, MLflow) to act with `key` (access key id, secret),
    with no ~/.aws settings leaking in."""
    empty = tmp / "aws-empty-config"
    empty.write_text("")
    return {
        "AWS_ACCESS_KEY_ID": key[0],
        "AWS_SECRET_ACCESS_KEY": key[1],
        **REGION,
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


S3_ROLES = ("mlflow", "operator", "trainer")  # who holds an S3 key: the MLflow server and these two roles


def enforce_s3_iam(endpoint: str) -> dict[str, tuple[str, str]]:
    """Create the bucket, one IAM user per S3 role with its policy from infra/minio/policies (and `admin`, with every
    right, for the tests' own view of the bucket), then switch moto's IAM checks on: from then on every request needs
    a key of one of these users and is allowed only what its policy allows. Returns {role: (key id, secret)}."""
    session = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    keys = {"aws_access_key_id": BOOTSTRAP_AWS["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": "bootstrap-before-iam"}
    boto3.client("s3", **session, **keys).create_bucket(Bucket=BUCKET)
    iam = boto3.client("iam", **session, **keys)
    policies = {role: (S3_POLICIES / f"shapca-{role}.json").read_text() for role in S3_ROLES}
    policies["admin"] = json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    )
    out = {}
    for role, document in policies.items():
        user = f"shapca-{role}"
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName=user, PolicyDocument=document)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        out[role] = (key["AccessKeyId"], key["SecretAccessKey"])
    # moto's server-mode switch (moto/moto_api): authenticate every request from now on.
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.load(response)["status"] == "ok"
    return out


@dataclass
class Server:
    """A server process that a fault test can stop and start again: same command, same port, same database."""

    name: str
    args: list[str]
    env: dict[str, str]
    logs: Path
    health_url: str
    start_timeout: float = 180
    process: ManagedProcess | None = None
    starts: int = 0

    def start(self) -> float:
        """Start it and wait until `health_url` answers; returns the seconds that took."""
        if self.alive():
            raise AssertionError(f"{self.name} is already running")
        self.starts += 1
        name = self.name if self.starts == 1 else f"{self.name}-{self.starts}"  # one log file per start
        self.process = start_process(name, self.args, self.env, self.logs, self.logs)
        return wait_http(self.health_url, self.process, timeout=self.start_timeout)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def log(self, tail_chars: int = 4000) -> str:
        return self.process.log(tail_chars) if self.process is not None else ""


@dataclass(frozen=True)
class Credentials:
    """Every secret of the stack, generated for the session. Each role's processes get only their own."""

    mlflow: dict[str, tuple[str, str]]  # role -> (user, password); the operator is the server's admin
    prefect: dict[str, str]  # role -> its auth string at the gateway (the consumer has none)
    prefect_server: str  # the Prefect server's own auth string: the gateway's alone
    mlflow_secret_key: str  # MLflow's Flask secret (CSRF)
    s3: dict[str, tuple[str, str]]  # mlflow, operator, trainer, admin -> (key id, secret)
    postgres_password: str

    @classmethod
    def generate(cls, s3: dict[str, tuple[str, str]], postgres_password: str) -> Credentials:
        def password() -> str:
            return secrets.token_urlsafe(18)

        return cls(
            mlflow={role: (f"e2e-{role}", password()) for role in ROLES},
            prefect={role: f"{role}:{password()}" for role in ROLES if role != "consumer"},
            prefect_server=f"server:{password()}",
            mlflow_secret_key=password(),
            s3=s3,
            postgres_password=postgres_password,
        )

    def mlflow_users_env(self) -> dict[str, str]:
        """What `python -m flows.provision_mlflow` reads: SHAPCA_MLFLOW_<ROLE>_USERNAME/_PASSWORD of each role user."""
        return {
            f"SHAPCA_MLFLOW_{role.upper()}_{field}": value
            for role, (user, password) in self.mlflow.items()
            if role != "operator"
            for field, value in (("USERNAME", user), ("PASSWORD", password))
        }

    def secrets(self) -> dict[str, str]:
        """name -> value of every secret (user names and key ids are not secrets)."""
        out = {f"mlflow {role} password": pw for role, (_, pw) in self.mlflow.items()}
        out |= {f"prefect {role} auth string": s.partition(":")[2] for role, s in self.prefect.items()}
        out |= {f"s3 {role} secret key": secret for role, (_, secret) in self.s3.items()}
        out["prefect server auth string"] = self.prefect_server.partition(":")[2]
        out["mlflow flask secret key"] = self.mlflow_secret_key
        out["postgres password"] = self.postgres_password
        return out


def mlflow_server(env: dict[str, str], dbs: Databases, credentials: Credentials, root: Path, logs: Path) -> Server:
    """The MLflow tracking server with authentication, on PostgreSQL, proxying artifacts to s3://shapca/mlflow (not
    started yet). Its command line holds no secret: the database URI and every credential are in its environment."""
    port = free_port()
    ini = root / "mlflow-basic-auth.ini"
    ini.write_text(
        string.Template(MLFLOW_AUTH_INI.read_text()).substitute(
            MLFLOW_AUTH_DB_USER=dbs.user, MLFLOW_AUTH_DB_HOST=dbs.host, MLFLOW_AUTH_DB_NAME=dbs.mlflow_auth_db
        )
    )
    admin, admin_password = credentials.mlflow["operator"]
    server_env = {
        **env,
        "MLFLOW_BACKEND_STORE_URI": dbs.mlflow_url,
        "PGPASSWORD": dbs.password,
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_ENABLE_WORKSPACES": "true",
        "MLFLOW_AUTH_ADMIN_USERNAME": admin,
        "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": credentials.mlflow_secret_key,
    }
    args = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--app-name",
        "basic-auth",
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
    return Server("mlflow-server", args, server_env, logs, f"http://127.0.0.1:{port}/health")


def prefect_server(penv: PrefectEnv, logs: Path, auth_string: str | None = None) -> Server:
    """`prefect server start` with the environment of `penv` (its database URL, port and settings; not started yet),
    requiring `auth_string` when given (the gateway's; nothing else reaches the server)."""
    port = penv.env["PREFECT_SERVER_API_PORT"]
    env = dict(penv.env)
    if auth_string is not None:
        env |= {"PREFECT_SERVER_API_AUTH_STRING": auth_string, "PREFECT_API_AUTH_STRING": auth_string}
    args = [str(Path(sys.executable).with_name("prefect")), "server", "start", "--host", "127.0.0.1", "--port", port]
    return Server("prefect-server", args, env, logs, f"{penv.api_url}/health")


def prefect_gateway(
    project_root: Path, port: int, upstream: str, credentials: Credentials, env: dict, logs: Path
) -> Server:
    """The role-aware gateway (components/access/prefect_gateway.py, run as the standalone file it is) on `port`, in
    front of the Prefect server at `upstream`; its health check is the server's, through it."""
    args = [
        sys.executable,
        str(project_root / "components" / "access" / "prefect_gateway.py"),
        "--upstream",
        upstream,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    gateway_env = {
        **env,
        "PREFECT_SERVER_API_AUTH_STRING": credentials.prefect_server,
        **{f"SHAPCA_PREFECT_{role.upper()}_AUTH_STRING": value for role, value in credentials.prefect.items()},
    }
    return Server("prefect-gateway", args, gateway_env, logs, f"http://127.0.0.1:{port}/api/health")


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


# ---------------------------------------------------------------------------------------------------------------------
# The whole stack, operator steps done


def run_checked(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 300) -> str:
    """Run a command; a non-zero exit fails with its output. Returns stdout."""
    COMMANDS.append(list(args))
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(
            f"`{' '.join(args)}` exited {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result.stdout


def s3_keys(s3, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


ROLES = ("operator", "trainer", "consumer", "watcher")


@dataclass
class ProductionStack:
    """Handles on every part of the running topology, and the environment each role's processes get."""

    root: Path  # everything the stack writes lives under it
    logs: Path
    project_root: Path
    base_env: dict[str, str]  # this test process's environment without Prefect, MLflow, S3 or project settings
    s3_envs: dict[str, dict[str, str]]  # per S3 role (mlflow, operator, trainer, admin): endpoint and its key
    s3: object  # a boto3 S3 client with every right (`admin`): the test's own view of the bucket
    moto: ManagedProcess
    prefect: Server  # the Prefect server, behind the gateway
    gateway: Server  # the role-aware gateway: PREFECT_API_URL of every role
    penv: PrefectEnv  # the operator's Prefect CLI and API (`penv.cli`, `penv.api`, `penv.flow_run`)
    mlflow: Server
    credentials: Credentials
    repo: Path  # the bare git repository every flow run clones (SHAPCA_REPO_URL)
    commit: str
    worker_bin: Path  # a virtualenv with the locked dependencies and without this project
    consumer_prefetch: concurrent.futures.Future
    operator_output: dict[str, str]  # what the operator's commands printed (provision, provision_mlflow, deploy)
    timings: dict[str, float]
    workers: list[ManagedProcess] = field(default_factory=list)

    @property
    def tracking_uri(self) -> str:
        return self.mlflow.health_url.removesuffix("/health")

    @property
    def prefect_server_api_url(self) -> str:
        """The Prefect server itself, which only the gateway is meant to reach."""
        return self.prefect.health_url.removesuffix("/health")

    def env(self, role: str) -> dict[str, str]:
        """What a process of `role` gets: the endpoints and that role's credentials, nothing else of this test process.

        operator: MLflow admin, Prefect (all), S3 dvc/; trainer (the workers): MLflow trainer, Prefect (worker and
        flow runs), S3 dvc/ read, contexts/ prefect-results/ checkpoints/; consumer: MLflow consumer only; watcher:
        MLflow and Prefect reads only. No role gets the Prefect server's own string or the MLflow server's S3 key."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}: expected one of {ROLES}")
        user, password = self.credentials.mlflow[role]
        env = {
            **self.base_env,
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_TRACKING_USERNAME": user,
            "MLFLOW_TRACKING_PASSWORD": password,
            **PROXIED_DOWNLOADS,
            "HF_HUB_OFFLINE": "1",
            "NO_COLOR": "1",
        }
        if role == "consumer":
            return env  # a registry consumer knows the tracking server and its own MLflow user, nothing else
        env |= {"PREFECT_API_URL": self.penv.api_url, "PREFECT_API_AUTH_STRING": self.credentials.prefect[role]}
        if role == "watcher":
            return env
        return {**env, **self.s3_envs[role], "SHAPCA_REPO_URL": str(self.repo)}

    def start_worker(self, pool: str = "gpu", name: str | None = None) -> tuple[ManagedProcess, Path]:
        """`prefect worker start --pool <pool>` as the trainer, from a new empty directory with its own empty
        PREFECT_HOME, in the worker virtualenv (no checkout). Returns the process and its working directory."""
        index = len(self.workers) + 1
        name = name or f"worker-{pool}-{index}"
        workdir = self.root / "workers" / name
        workdir.mkdir(parents=True)
        env = {
            **self.env("trainer"),
            "PATH": f"{self.worker_bin}:{self.base_env.get('PATH', '/usr/bin:/bin')}",
            "VIRTUAL_ENV": str(self.worker_bin.parent),
            "PREFECT_HOME": str(self.root / "workers" / f"{name}-prefect-home"),
            "TRANSFORMERS_OFFLINE": "1",
            "OMP_NUM_THREADS": "2",
        }
        args = [str(self.worker_bin / "prefect"), "worker", "start", "--pool", pool, "--limit", "1", "--name", name]
        worker = start_process(name, args, env, workdir, self.logs)
        self.workers.append(worker)
        return worker, workdir

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()

    def deployments(self) -> dict[tuple[str, str], dict]:
        """(flow name, deployment name) -> the deployment as the API returns it."""
        flows = {f["id"]: f["name"] for f in self.penv.api("POST", "/flows/filter", {})}
        return {(flows[d["flow_id"]], d["name"]): d for d in self.penv.api("POST", "/deployments/filter", {})}


def base_environment() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "MLFLOW_", "AWS_", "SHAPCA_", "VIRTUAL_ENV", "PYTHONPATH"))
    }


@contextmanager
def start_production_stack(project_root: Path, root: Path) -> Iterator[ProductionStack]:
    """Start the topology and do the operator's steps; stop every process on exit (databases dropped too)."""
    logs = root / "logs"
    logs.mkdir(parents=True)
    base_env = base_environment()
    timings: dict[str, float] = {}
    t_start = time.monotonic()
    processes: list[ManagedProcess] = []
    servers: list[Server] = []
    stack: ProductionStack | None = None
    with postgres_databases() as dbs:
        consumer_prefetch = prefetch_consumer_venv(root / "consumer-venv", logs)
        try:
            moto, endpoint = start_moto({**base_env, **BOOTSTRAP_AWS}, logs)
            processes.append(moto)
            credentials = Credentials.generate(enforce_s3_iam(endpoint), dbs.password)
            s3_envs = {role: aws_env(root, endpoint, key) for role, key in credentials.s3.items()}
            s3 = boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id=credentials.s3["admin"][0],
                aws_secret_access_key=credentials.s3["admin"][1],
            )

            # Servers: Prefect behind the gateway, and MLflow with authentication, both on PostgreSQL; MLflow holds
            # the only S3 key for s3://shapca/mlflow (consumers need none).
            upstream_port, gateway_port = free_port(), free_port()
            penv = make_env(
                root / "operator",
                gateway_port,
                {
                    **{k: v for k, v in base_env.items() if k != "HOME"},
                    **s3_envs["operator"],
                    "PREFECT_API_AUTH_STRING": credentials.prefect["operator"],
                    "HOME": os.environ.get("HOME", str(root)),
                },
            )
            server_penv = make_env(
                root / "prefect-server",
                upstream_port,
                {
                    **{k: v for k, v in base_env.items() if k != "HOME"},
                    "PREFECT_SERVER_DATABASE_CONNECTION_URL": dbs.prefect_url,
                    # Deployment concurrency leases on the server's disk (PREFECT_HOME), not in its memory: a restarted
                    # server still knows them, and a running training's next lease renewal does not fail (README
                    # "Production", failure modes).
                    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": LEASE_STORAGE,
                    "HOME": os.environ.get("HOME", str(root)),
                },
            )
            prefect = prefect_server(server_penv, logs, auth_string=credentials.prefect_server)
            servers.append(prefect)
            timings["prefect_server_s"] = prefect.start()
            gateway = prefect_gateway(
                project_root, gateway_port, f"http://127.0.0.1:{upstream_port}", credentials, base_env, logs
            )
            servers.append(gateway)
            timings["gateway_s"] = gateway.start()
            mlflow = mlflow_server({**base_env, **s3_envs["mlflow"]}, dbs, credentials, root, logs)
            servers.append(mlflow)
            timings["mlflow_server_s"] = mlflow.start()
            timings["servers_s"] = time.monotonic() - t_start

            # The operator, from the checkout: the code to git, data to the S3 remote, the servers provisioned.
            repo = root / "git" / "shapca-ops.git"
            repo.parent.mkdir()
            commit = snapshot_repository(project_root, repo)
            tracking_uri = mlflow.health_url.removesuffix("/health")
            admin, admin_password = credentials.mlflow["operator"]
            operator = {
                **penv.env,
                "MLFLOW_TRACKING_URI": tracking_uri,
                "MLFLOW_TRACKING_USERNAME": admin,
                "MLFLOW_TRACKING_PASSWORD": admin_password,
                **PROXIED_DOWNLOADS,
                "SHAPCA_REPO_URL": str(repo),
            }
            penv.env.update(operator)
            output: dict[str, str] = {}
            t0 = time.monotonic()
            run_checked([str(Path(sys.executable).with_name("dvc")), "push", "-r", "storage"], operator, project_root)
            timings["dvc_push_s"] = time.monotonic() - t0
            output["provision"] = run_checked([sys.executable, "-m", "flows.provision"], operator, project_root)
            output["provision_mlflow"] = run_checked(
                [sys.executable, "-m", "flows.provision_mlflow"],
                {**operator, **credentials.mlflow_users_env()},
                project_root,
            )
            t0 = time.monotonic()
            output["deploy"] = penv.cli("deploy", "--all", cwd=project_root, timeout=600).stdout  # ~1 min idle
            timings["deploy_s"] = time.monotonic() - t0
            worker_bin = worker_venv(root / "worker-venv")
            timings["stack_s"] = time.monotonic() - t_start
            stack = ProductionStack(
                root=root,
                logs=logs,
                project_root=project_root,
                base_env=base_env,
                s3_envs=s3_envs,
                s3=s3,
                moto=moto,
                prefect=prefect,
                gateway=gateway,
                penv=penv,
                mlflow=mlflow,
                credentials=credentials,
                repo=repo,
                commit=commit,
                worker_bin=worker_bin,
                consumer_prefetch=consumer_prefetch,
                operator_output=output,
                timings=timings,
            )
            yield stack
        finally:
            # Workers first (they would keep retrying a server that is gone), then the servers, then S3.
            if stack is not None:
                stack.stop_workers()
            for server in reversed(servers):
                server.stop()
            for proc in reversed(processes):
                proc.stop()
            consumer_prefetch.cancel()


@pytest.fixture(scope="session")
def production_stack(project_root, tmp_path_factory) -> Iterator[ProductionStack]:
    with start_production_stack(project_root, tmp_path_factory.mktemp("production-stack")) as stack:
        yield stack
