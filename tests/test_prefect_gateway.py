"""The Prefect gateway's rules and credential handling, without servers (the real thing, with Prefect's server,
workers, CLI and websockets, is tests/test_production_topology_access.py). Milliseconds."""

from __future__ import annotations

import base64
import json

import pytest

from components.access.prefect_gateway import Gateway, _without_pool_creation, decide, gateway_from_env

ID = "0b8f8a52-3c5e-4bd8-9a34-2f7c9f6d1e11"


@pytest.mark.parametrize(
    "method, path, body, operator, trainer, watcher",
    [
        # What a worker and its flow runs do (the calls recorded from a real flow run through the gateway).
        ("GET", f"/deployments/{ID}", None, True, True, True),
        ("POST", "/flow_runs/filter", {}, True, True, True),
        ("POST", "/work_pools/gpu/get_scheduled_flow_runs", {}, True, True, False),
        ("POST", f"/flow_runs/{ID}/set_state", {"state": {"type": "RUNNING"}}, True, True, False),
        ("POST", "/flow_runs/", {"flow_id": ID, "parent_task_run_id": ID}, True, True, False),
        ("PATCH", f"/flow_runs/{ID}", {"empirical_policy": {"retries": 0}}, True, True, False),
        ("POST", "/logs/", [{"message": "epoch 1"}], True, True, False),
        ("PATCH", f"/artifacts/{ID}", {"data": 50.0}, True, True, False),
        ("POST", f"/v2/concurrency_limits/leases/{ID}/renew", {}, True, True, False),
        ("WS", "/events/in", None, True, True, False),
        ("WS", "/work_pools/gpu/workers/connect", None, True, True, False),
        ("WS", "/events/out", None, True, True, True),
        # What only the operator does.
        ("POST", f"/flow_runs/{ID}/set_state", {"state": {"type": "CANCELLING"}}, True, False, False),
        ("POST", "/flow_runs/", {"flow_id": ID, "deployment_id": ID}, True, False, False),
        ("PATCH", f"/flow_runs/{ID}", {"parameters": {"overrides": ["train.epochs=99"]}}, True, False, False),
        ("POST", f"/deployments/{ID}/create_flow_run", {}, True, False, False),
        ("PATCH", f"/deployments/{ID}", {"paused": True}, True, False, False),
        ("POST", f"/deployments/{ID}/pause_deployment", None, True, False, False),
        ("POST", "/deployments/", {"name": "x"}, True, False, False),
        ("DELETE", f"/deployments/{ID}", None, True, False, False),
        ("POST", "/work_pools/", {"name": "x"}, True, False, False),
        ("PATCH", "/work_pools/gpu", {"base_job_template": {}}, True, False, False),
        ("POST", "/automations/", {}, True, False, False),
        ("POST", "/block_documents/", {}, True, False, False),
        ("POST", "/variables/", {}, True, False, False),
        # Secrets of blocks: readable by the roles that use them, not by a watcher, however it asks.
        ("GET", f"/block_documents/{ID}?include_secrets=true", None, True, True, False),
        ("GET", f"/block_documents/{ID}?include_secrets=1", None, True, True, False),
        ("GET", f"/block_documents/{ID}?include%5Fsecrets=%74rue", None, True, True, False),
        ("POST", "/block_documents/filter", {"include_secrets": True}, True, True, False),
        ("GET", f"/block_documents/{ID}", None, True, True, True),
        # A path that a client or the server would read as another one is refused for every role: an HTTP client
        # removes dot segments before sending, so /ui/../deployments/x/create_flow_run would reach the server as
        # /deployments/x/create_flow_run after matching the read rule /ui/.+ here.
        ("POST", f"/ui/../deployments/{ID}/create_flow_run", {}, False, False, False),
        ("POST", f"/ui/./../deployments/{ID}/pause_deployment", None, False, False, False),
        ("POST", "/flow_runs//filter", {}, False, False, False),
        ("POST", "/ui/%2e%2e/work_pools/", {"name": "x"}, False, False, False),
        ("GET", "/ui/..\\deployments", None, False, False, False),
        ("WS", "/events/in/..", None, False, False, False),
    ],
)
def test_each_role_gets_its_requests(method, path, body, operator, trainer, watcher):
    path, _, query = path.partition("?")
    raw = json.dumps(body).encode() if body is not None else b""
    for role, allowed in (("operator", operator), ("trainer", trainer), ("watcher", watcher)):
        refusal = decide(role, method, path, query, raw)
        assert (refusal is None) == allowed, (role, method, path, refusal)


ROLES = {"operator": "operator:0123456789ab", "trainer": "trainer:0123456789ab"}


def test_credentials_map_to_roles_and_nothing_else():
    gateway = Gateway("http://127.0.0.1:1", "server:0123456789ab", ROLES)

    def basic(value: str) -> str:
        return "Basic " + base64.b64encode(value.encode()).decode()

    assert gateway.role_of_header(basic(ROLES["trainer"])) == "trainer"
    assert gateway.role_of_header(basic("server:0123456789ab")) is None  # the server's own string is no role
    for header in (None, "", basic("trainer:wrong"), "Bearer " + ROLES["trainer"], "Basic !!not-base64!!"):
        assert gateway.role_of_header(header) is None, header
    assert gateway.role_of_string(ROLES["operator"]) == "operator" and gateway.role_of_string(None) is None


def test_a_gateway_without_distinct_strong_credentials_does_not_start():
    with pytest.raises(ValueError, match="must require it"):
        Gateway("http://127.0.0.1:1", "", ROLES)
    with pytest.raises(ValueError, match="must differ"):
        Gateway("http://127.0.0.1:1", ROLES["trainer"], ROLES)
    with pytest.raises(ValueError, match="at least 12 characters"):
        Gateway("http://127.0.0.1:1", "server:0123456789ab", {"trainer": "short"})
    with pytest.raises(SystemExit, match="SHAPCA_PREFECT_TRAINER_AUTH_STRING"):
        gateway_from_env("http://127.0.0.1:1", {"PREFECT_SERVER_API_AUTH_STRING": "x" * 20})


def test_a_workers_hello_never_creates_a_pool():
    hello = {"type": "worker.hello.v1", "payload": {"worker_name": "w", "create_pool_if_not_found": True}}
    rewritten = json.loads(_without_pool_creation(json.dumps(hello)))
    assert rewritten["payload"] == {"worker_name": "w", "create_pool_if_not_found": False}
    assert _without_pool_creation("not json") == "not json"
