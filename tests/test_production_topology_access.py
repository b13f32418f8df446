"""Access control on the production topology (issue 22), with real processes on 127.0.0.1, on the session's stack.

For each role (operator, trainer, consumer, watcher) and for no credential at all, what each server allows and what
it refuses, every refusal checked as the refusal it is (HTTP 401 or 403, S3's AccessDenied), never as "no error":

- MLflow (basic-auth, workspaces on): model load, run read, version tag, artifact upload, alias move and delete,
  version delete, registered model create, permission grant;
- Prefect, through the role-aware gateway: flow run create and cancel, deployment update and pause, work pool change,
  reads, websockets, the CLI, and the server itself refusing anything but the gateway's string;
- S3 (moto enforcing IAM with infra/minio/policies): object put, get and delete inside and outside each role's
  prefixes; the consumer has no key.

Then a promotion under authentication with exactly the trainer's permissions, a failure injected before and after the
champion alias moves, and a stale lock of another user broken by the trainer; and a scan for secrets on every
command line the stack ran, in every log, in MLflow's runs and registry, and in Prefect's deployments and pools.

Cost on the shared stack (2 loaded cores): about 1 to 3 minutes for the whole file, no training.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import mlflow
import psutil
import pytest
import requests
import websockets.sync.client
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.server.auth.client import AuthServiceClient
from production_topology import BUCKET, COMMANDS, ProductionStack, run_checked, s3_keys
from test_registry import FULL_DEV

from components.tracking.registry import (
    CHAMPION,
    RETIRED,
    TAG_CHECK,
    TAG_HOLDER,
    TAG_LOCK,
    TAG_PROMOTION,
    TAG_REASON,
    champion_version,
    ensure_registered_model,
    lock_name,
    open_tickets,
    promote,
    register_version,
    registry_lock,
)

pytestmark = pytest.mark.slow

OK = 200  # what `attempt` reports for an action that succeeded
WHO = ("anonymous", "consumer", "watcher", "trainer", "operator")


def attempt(action) -> int:
    """OK, or the HTTP status of the refusal (MLflow's REST errors, its artifact proxy's, urllib's, S3's)."""
    try:
        action()
        return OK
    except MlflowException as exc:
        return exc.get_http_status_code()
    except requests.HTTPError as exc:
        return exc.response.status_code
    except urllib.error.HTTPError as exc:
        return exc.code
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture
def as_role(production_stack: ProductionStack, monkeypatch):
    """Switch the MLflow credentials this process's clients send (MLflow reads the environment on every request)."""

    def switch(role: str) -> None:
        for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            if role == "anonymous":
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, production_stack.env(role)[key])

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")  # artifacts through the proxy, as every role
    return switch


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input):
        return model_input


def _logged_run(client: MlflowClient, experiment_id: str, params: dict | None = None) -> str:
    run = client.create_run(experiment_id)
    for key, value in (params or {}).items():
        client.log_param(run.info.run_id, key, value)
    client.log_text(run.info.run_id, "a tiny stand-in for model weights\n", "model/weights.txt")
    return run.info.run_id


# ---------------------------------------------------------------------------------------------------------------------
# MLflow


@pytest.mark.timeout(900)
def test_mlflow_allows_each_role_its_job_and_refuses_the_rest(production_stack: ProductionStack, as_role, tmp_path):
    stack, uri = production_stack, production_stack.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = "shapca-access-matrix"
    as_role("operator")
    ensure_registered_model(client, name)  # only the operator creates registered models
    experiment_id = client.get_experiment_by_name("shapca").experiment_id
    as_role("trainer")
    run_id = _logged_run(client, experiment_id)
    # A model as the pipeline logs it: a LoggedModel of the run (its files under the experiment's models/), registered
    # from models:/m-<id>. The consumer reads it through MLflow's artifact proxy, not through the run.
    previous_uri = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(name="model", python_model=Echo(), pip_requirements=["mlflow"])
    finally:
        mlflow.set_tracking_uri(previous_uri)
    v1, v2, scratch = (
        client.create_model_version(name, info.model_uri, run_id=run_id, model_id=info.model_id).version
        for _ in range(3)
    )
    client.set_registered_model_alias(name, CHAMPION, v1)
    client.set_registered_model_alias(name, "scratch", scratch)

    def move_champion():
        other = v2 if champion_version(client, name) == v1 else v1
        client.set_registered_model_alias(name, CHAMPION, other)

    def grant():
        consumer = stack.credentials.mlflow["consumer"][0]
        AuthServiceClient(uri).grant_user_permission(consumer, "registered_model", name, "MANAGE")

    def load_champion():  # as a consumer does: models:/ resolved on the tracking server, files through its proxy
        # Both URIs: an earlier test of the session may have set a registry URI of its own in this process.
        previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            dst = tmp_path / f"dl-{time.monotonic_ns()}"
            dst.mkdir()
            mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION}", dst_path=str(dst)).predict(["a"])
        finally:
            mlflow.set_tracking_uri(previous[0])
            mlflow.set_registry_uri(previous[1])

    actions = {
        "model load": load_champion,
        "run read": lambda: client.get_run(run_id),
        "version tag set": lambda: client.set_model_version_tag(name, v1, "access-test", "x"),
        "artifact upload": lambda: client.log_text(run_id, "x", f"access/{time.monotonic_ns()}.txt"),
        "alias move": move_champion,
        "alias delete": lambda: client.delete_registered_model_alias(name, "scratch"),
        "version delete": lambda: client.delete_model_version(name, scratch),
        "registered model create": lambda: client.create_registered_model(f"access-made-{time.monotonic_ns()}"),
        "permission grant": grant,
    }
    observed = {}
    for who in WHO:
        as_role(who)
        for action, do in actions.items():
            if who == "operator" and action == "permission grant":
                continue  # the operator administers users; granting MANAGE to the consumer is not a test to leave
            observed[action, who] = attempt(do)
    U, F = 401, 403
    expected = {
        #                               anonymous consumer watcher trainer operator
        "model load": (U, OK, OK, OK, OK),
        "run read": (U, F, OK, OK, OK),  # the consumer reads models, not training runs
        "version tag set": (U, F, F, OK, OK),
        "artifact upload": (U, F, F, OK, OK),
        "alias move": (U, F, F, OK, OK),
        "alias delete": (U, F, F, F, OK),  # DELETE: why promotion never removes an alias
        "version delete": (U, F, F, F, OK),
        "registered model create": (U, F, F, F, OK),  # only the operator creates (workspaces on)
        "permission grant": (U, F, F, F, None),
    }
    expected = {
        (action, who): code
        for action, codes in expected.items()
        for who, code in zip(WHO, codes, strict=True)
        if code is not None
    }
    assert observed == expected
    as_role("operator")
    for model in client.search_registered_models("name LIKE 'access-made-%'"):
        client.delete_registered_model(model.name)
    client.delete_registered_model(name)
    as_role("trainer")
    client.set_terminated(run_id)


@pytest.mark.timeout(600)
def test_mlflow_provisioning_is_idempotent_and_undoes_drift(production_stack: ProductionStack, as_role):
    stack = production_stack
    as_role("operator")
    auth = AuthServiceClient(stack.tracking_uri)
    trainer = stack.credentials.mlflow["trainer"][0]
    # Drift: the trainer made an admin, and its role widened to MANAGE on experiments.
    auth.update_user_admin(trainer, True)
    (role,) = [r for r in auth.list_user_roles(trainer) if r.name == "shapca-trainer"]
    (widened,) = [g for g in auth.list_role_permissions(role.id) if g.resource_type == "experiment"]
    auth.update_role_permission(widened.id, "MANAGE")
    env = {**stack.env("operator"), **stack.credentials.mlflow_users_env()}
    again = run_checked([sys.executable, "-m", "flows.provision_mlflow"], env, stack.project_root)
    assert f"mlflow user {trainer} (trainer): exists, password set, admin rights removed" in again, again
    assert "created" not in again  # every user, role, experiment and registered model was already there
    assert not auth.get_user(trainer).is_admin
    grants = {(g.resource_type, g.resource_pattern, g.permission) for g in auth.list_role_permissions(role.id)}
    assert grants == {("experiment", "*", "EDIT"), ("registered_model", "*", "EDIT")}
    # Credentials come from the environment only: a missing one is named, nothing falls back to a default.
    del env["SHAPCA_MLFLOW_CONSUMER_PASSWORD"]
    with pytest.raises(AssertionError, match="set SHAPCA_MLFLOW_CONSUMER_PASSWORD in the environment"):
        run_checked([sys.executable, "-m", "flows.provision_mlflow"], env, stack.project_root)


# ---------------------------------------------------------------------------------------------------------------------
# Prefect, through the gateway


def _prefect(url: str, method: str, path: str, auth: str | None, body: dict | None = None):
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
        return json.loads(raw) if raw else None


@pytest.mark.timeout(900)
def test_prefect_gateway_allows_each_role_its_job_and_refuses_the_rest(production_stack: ProductionStack, tmp_path):
    stack, url = production_stack, production_stack.penv.api_url
    strings = {
        "anonymous": None,
        # The consumer holds no Prefect credential: its MLflow one is not a Prefect credential either.
        "consumer": ":".join(stack.credentials.mlflow["consumer"]),
        **stack.credentials.prefect,
    }
    assert "PREFECT_API_AUTH_STRING" not in stack.env("consumer") and "PREFECT_API_URL" not in stack.env("consumer")
    operator = strings["operator"]
    deployment = stack.deployments()[("train-shapca", "cpu")]  # a pool no worker serves during this test
    pool = _prefect(url, "GET", "/work_pools/cpu", operator)
    flow_run = _prefect(url, "POST", f"/deployments/{deployment['id']}/create_flow_run", operator, {})
    cancel = {"state": {"type": "CANCELLING", "message": "access test"}}
    actions = {
        "read": ("POST", "/flow_runs/filter", {"limit": 1}),
        "flow run create": ("POST", f"/deployments/{deployment['id']}/create_flow_run", {"tags": ["access-test"]}),
        "flow run cancel": ("POST", f"/flow_runs/{flow_run['id']}/set_state", cancel),
        "deployment update": ("PATCH", f"/deployments/{deployment['id']}", {"description": "changed by access test"}),
        "deployment pause": ("POST", f"/deployments/{deployment['id']}/pause_deployment", None),
        "work pool change": ("PATCH", "/work_pools/cpu", {"concurrency_limit": 99}),
        "work pool create": ("POST", "/work_pools/", {"name": "access-test-pool", "type": "process"}),
    }
    created_runs = [flow_run["id"]]
    observed = {}
    try:
        for who in WHO:
            for action, (method, path, body) in actions.items():
                result = {}
                observed[action, who] = attempt(
                    lambda method=method, path=path, body=body, result=result, auth=strings[who]: result.update(
                        response=_prefect(url, method, path, auth, body)
                    )
                )
                if action == "flow run create" and observed[action, who] == OK:
                    created_runs.append(result["response"]["id"])
    finally:  # put back what the operator was allowed to change, and remove what it created
        _prefect(url, "PATCH", f"/deployments/{deployment['id']}", operator, {"description": deployment["description"]})
        _prefect(url, "POST", f"/deployments/{deployment['id']}/resume_deployment", operator)
        _prefect(url, "PATCH", "/work_pools/cpu", operator, {"concurrency_limit": pool["concurrency_limit"]})
        attempt(lambda: _prefect(url, "DELETE", "/work_pools/access-test-pool", operator))
        for run in created_runs:
            attempt(lambda run=run: _prefect(url, "DELETE", f"/flow_runs/{run}", operator))
    U, F = 401, 403
    expected = {
        #                        anonymous consumer watcher trainer operator
        "read": (U, U, OK, OK, OK),
        "flow run create": (U, U, F, F, OK),
        "flow run cancel": (U, U, F, F, OK),
        "deployment update": (U, U, F, F, OK),
        "deployment pause": (U, U, F, F, OK),
        "work pool change": (U, U, F, F, OK),
        "work pool create": (U, U, F, F, OK),
    }
    expected = {(a, who): c for a, codes in expected.items() for who, c in zip(WHO, codes, strict=True)}
    assert observed == expected

    # The server itself answers only the gateway's string: a role's string sent to it directly is refused.
    server = stack.prefect_server_api_url
    for who in ("anonymous", "trainer", "operator"):
        assert attempt(lambda who=who: _prefect(server, "POST", "/flows/filter", strings[who], {})) == U, who
    assert attempt(lambda: _prefect(server, "POST", "/flows/filter", stack.credentials.prefect_server, {})) == OK

    # Websockets: authenticated by their first message; a role gets only its own subscriptions.
    socket_url = "ws" + url.removeprefix("http")

    def first_reply(path: str, who: str):
        with websockets.sync.client.connect(socket_url + path, subprotocols=["prefect"], open_timeout=30) as ws:
            ws.send(json.dumps({"type": "auth", "token": strings[who] or ""}))
            try:
                return json.loads(ws.recv(timeout=30))["type"]
            except websockets.ConnectionClosed as closed:
                return f"closed {closed.rcvd.code}: {closed.rcvd.reason}"

    assert first_reply("/events/out", "watcher") == "auth_success"
    assert first_reply("/events/in", "trainer") == "auth_success"
    assert first_reply("/events/in", "watcher").startswith("closed 1008: Forbidden: role watcher may not WS")
    assert first_reply("/events/out", "anonymous") == "closed 1008: Invalid token"

    # What a worker's credential gets when it tries to start a deployment with Prefect's own CLI: a 403, no flow run.
    trainer_env = {**stack.env("trainer"), "PREFECT_HOME": str(tmp_path / "trainer-home")}
    with pytest.raises(AssertionError, match="403") as refused:
        run_checked([str(stack.worker_bin / "prefect"), "deployment", "run", "train-shapca/cpu"], trainer_env, tmp_path)
    assert "Forbidden" in str(refused.value)
    runs = _prefect(url, "POST", "/flow_runs/filter", operator, {"deployments": {"id": {"any_": [deployment["id"]]}}})
    assert runs == []
    assert not _prefect(url, "GET", f"/deployments/{deployment['id']}", operator)["paused"]


# ---------------------------------------------------------------------------------------------------------------------
# S3


def _s3(env: dict[str, str] | None, endpoint: str, **config):
    if env is None:  # no credential: an unsigned request
        return boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", config=Config(signature_version=UNSIGNED)
        )
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.mark.timeout(600)
def test_s3_keys_reach_only_their_prefixes(production_stack: ProductionStack):
    stack = production_stack
    endpoint = stack.s3_envs["admin"]["AWS_ENDPOINT_URL"]
    assert not any(key.startswith("AWS_") for key in stack.env("consumer")), "a consumer holds no S3 key"
    assert not any(key.startswith("AWS_") for key in stack.env("watcher"))
    assert stack.env("trainer")["AWS_ACCESS_KEY_ID"] == stack.s3_envs["trainer"]["AWS_ACCESS_KEY_ID"]
    dvc_object = s3_keys(stack.s3, "dvc/")[0]  # pushed by the operator
    mlflow_object = s3_keys(stack.s3, "mlflow/")[0]  # written by the MLflow server
    holders = {
        "anonymous": None,
        "wrong key": {"AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG0", "AWS_SECRET_ACCESS_KEY": "not-a-secret-of-anyone"},
        "mlflow server": stack.s3_envs["mlflow"],
        "operator": stack.s3_envs["operator"],
        "trainer": stack.s3_envs["trainer"],
    }
    clients = {who: _s3(env, endpoint) for who, env in holders.items()}
    prefixes = ("dvc", "mlflow", "contexts", "prefect-results", "checkpoints", "elsewhere")
    observed = {}
    for who, s3 in clients.items():
        for prefix in prefixes:
            key = f"{prefix}/access-test/{who.replace(' ', '-')}.txt"
            observed["put", prefix, who] = attempt(
                lambda s3=s3, key=key: s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
            )
        observed["get", "dvc", who] = attempt(lambda s3=s3: s3.get_object(Bucket=BUCKET, Key=dvc_object))
        observed["get", "mlflow", who] = attempt(lambda s3=s3: s3.get_object(Bucket=BUCKET, Key=mlflow_object))
        # Deleting what another role owns: the data version and an MLflow artifact (never tried by their owner: the
        # shared stack's later tests need both).
        if who != "operator":
            observed["delete", "dvc", who] = attempt(lambda s3=s3: s3.delete_object(Bucket=BUCKET, Key=dvc_object))
        if who != "mlflow server":
            observed["delete", "mlflow", who] = attempt(
                lambda s3=s3: s3.delete_object(Bucket=BUCKET, Key=mlflow_object)
            )
    # An unsigned PUT is refused by moto with a 500 (its IAM check reads the missing Authorization header and fails;
    # MinIO answers 403 AccessDenied): still a refusal, and the check below that no such object exists makes it one.
    F, A = 403, 500
    expected = {
        #                       anonymous wrong-key mlflow operator trainer
        ("put", "dvc"): (A, F, F, OK, F),
        ("put", "mlflow"): (A, F, OK, F, F),
        ("put", "contexts"): (A, F, F, F, OK),
        ("put", "prefect-results"): (A, F, F, F, OK),
        ("put", "checkpoints"): (A, F, F, F, OK),
        ("put", "elsewhere"): (A, F, F, F, F),
        ("get", "dvc"): (F, F, F, OK, OK),
        ("get", "mlflow"): (F, F, OK, F, F),
        ("delete", "dvc"): (F, F, F, None, F),  # the operator's own: not deleted here
        ("delete", "mlflow"): (F, F, None, F, F),  # the MLflow server's own
    }
    skipped = {("delete", "dvc", "operator"), ("delete", "mlflow", "mlflow server")}
    expected = {(*k, who): code for k, codes in expected.items() for who, code in zip(holders, codes, strict=True)}
    for key in skipped:
        expected.pop(key)
    assert observed == expected
    assert dvc_object in s3_keys(stack.s3, "dvc/") and mlflow_object in s3_keys(stack.s3, "mlflow/")
    assert not [key for key in s3_keys(stack.s3, "") if key.endswith("/access-test/anonymous.txt")]
    for key in s3_keys(stack.s3, ""):
        if "/access-test/" in key:
            stack.s3.delete_object(Bucket=BUCKET, Key=key)


# ---------------------------------------------------------------------------------------------------------------------
# Promotion with exactly the trainer's permissions


class CrashAtChampionAlias(MlflowClient):
    """Fails the promotion at its commit point: just before the champion alias moves, or just after."""

    def __init__(self, uri: str, when: str):
        super().__init__(tracking_uri=uri, registry_uri=uri)
        self.when = when

    def set_registered_model_alias(self, name, alias, version):
        if alias == CHAMPION and self.when == "before":
            raise RuntimeError("injected failure before the champion alias moved")
        super().set_registered_model_alias(name, alias, version)
        if alias == CHAMPION and self.when == "after":
            raise RuntimeError("injected failure after the champion alias moved")


def _consumer_sees(client: MlflowClient, name: str, as_role) -> tuple[str, dict]:
    """What a consumer of @champion gets: the version and its tags, read with the consumer's credentials."""
    as_role("consumer")
    version = client.get_model_version_by_alias(name, CHAMPION)
    as_role("trainer")
    return str(version.version), version.tags


@pytest.mark.timeout(900)
def test_promotion_with_the_trainers_permissions_is_never_half_applied(production_stack: ProductionStack, as_role):
    uri = production_stack.tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = "shapca-access-promotion"
    as_role("operator")
    for model in (name, lock_name(name)):  # what flows.provision_mlflow does for every shapca-<dataset>
        ensure_registered_model(client, model)
    experiment_id = client.get_experiment_by_name("shapca").experiment_id

    as_role("trainer")

    def register(metric: float) -> str:
        run_id = _logged_run(client, experiment_id, FULL_DEV)
        client.set_terminated(run_id)
        source = f"{client.get_run(run_id).info.artifact_uri}/model"
        return register_version(client, name, source, run_id=run_id, dev_metric=metric)

    v1 = register(0.50)
    assert promote(client, name, v1).promoted
    for when, metric in (("before", 0.60), ("after", 0.70)):
        candidate = register(metric)
        previous = champion_version(client, name)
        with pytest.raises(RuntimeError, match=f"injected failure {when}"):
            promote(CrashAtChampionAlias(uri, when), name, candidate)
        seen, tags = _consumer_sees(client, name, as_role)
        assert seen == (previous if when == "before" else candidate)
        assert tags[TAG_PROMOTION] == CHAMPION and tags[TAG_CHECK] == "passed" and tags[TAG_REASON], tags
        assert open_tickets(client, name) == []  # the failed promoter released its lock
        # The retry (the flow's task retry, or the next training's promotion) completes it.
        assert promote(client, name, candidate).alias == CHAMPION
        seen, tags = _consumer_sees(client, name, as_role)
        assert seen == candidate and tags[TAG_PROMOTION] == CHAMPION
    tagged = {str(v.version): v.tags[TAG_PROMOTION] for v in client.search_model_versions(f"name='{name}'")}
    assert list(tagged.values()).count(CHAMPION) == 1 and tagged[v1] == RETIRED, tagged

    # A stale lock of another user (the operator's promotion died): the trainer breaks it with its EDIT alone.
    as_role("operator")
    dead = client.create_model_version(
        lock_name(name), f"promotion-lock:/{name}", tags={TAG_LOCK: "open:held", TAG_HOLDER: "operator-host:1:dead"}
    )
    as_role("trainer")
    time.sleep(1.5)
    with registry_lock(client, name, timeout=30, stale_after=1.0):
        assert client.get_model_version(lock_name(name), dead.version).tags[TAG_LOCK] == "closed:broken"
    as_role("operator")
    client.delete_registered_model(name)
    client.delete_registered_model(lock_name(name))


# ---------------------------------------------------------------------------------------------------------------------
# No secret where it can be read


@pytest.mark.timeout(900)
def test_no_secret_on_a_command_line_in_a_log_in_mlflow_or_in_a_deployment(production_stack: ProductionStack, as_role):
    stack = production_stack
    secrets = stack.credentials.secrets()
    places: dict[str, str] = {}  # where -> text

    for i, args in enumerate(COMMANDS):
        places[f"command {i}: {args[:3]}"] = " ".join(args)
    for proc in psutil.process_iter(["pid", "cmdline"]):
        places[f"process {proc.info['pid']}"] = " ".join(proc.info["cmdline"] or [])
    for path in Path(stack.logs).rglob("*"):
        if path.is_file():
            places[f"log {path.name}"] = path.read_text(errors="replace")
    logs, offset = [], 0
    while page := stack.penv.api("POST", "/logs/filter", {"limit": 200, "offset": offset}):
        logs += [entry["message"] for entry in page]
        offset += len(page)
    places["prefect flow run logs"] = "\n".join(logs)
    for (flow, name), deployment in stack.deployments().items():
        places[f"deployment {flow}/{name}"] = json.dumps(
            {k: deployment[k] for k in ("job_variables", "parameters", "pull_steps", "description")}
        )
    for pool in stack.penv.api("POST", "/work_pools/filter", {}):
        places[f"work pool {pool['name']}"] = json.dumps(pool["base_job_template"])
    places["blocks"] = json.dumps(stack.penv.api("POST", "/block_documents/filter", {}))

    as_role("operator")  # reads everything in MLflow
    client = MlflowClient(tracking_uri=stack.tracking_uri, registry_uri=stack.tracking_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    for run in runs:
        places[f"mlflow run {run.info.run_id}"] = json.dumps([run.data.params, run.data.tags])
    for model in client.search_registered_models():
        places[f"mlflow model {model.name}"] = json.dumps([model.tags, model.description])
        for version in client.search_model_versions(f"name='{model.name}'"):
            places[f"mlflow {model.name} v{version.version}"] = json.dumps([version.tags, version.description])

    # The scan saw the real thing: servers and workers' command lines, flow-run logs, a training run's parameters.
    assert len(runs) >= 1 and any(len(r.data.params) > 20 for r in runs), "no training run to scan"
    assert logs and any("worker" in " ".join(args) for args in COMMANDS)
    leaks = [f"{what} in {where}" for where, text in places.items() for what, value in secrets.items() if value in text]
    assert not leaks, leaks
