"""A role-aware gateway in front of the Prefect API: one credential per role, each allowed only its own requests.

Prefect's open-source server knows one API auth string (PREFECT_SERVER_API_AUTH_STRING), so by itself it cannot tell
the operator from a worker, and a worker (which holds the S3 keys) could change deployments, pools and automations:
code execution with the operator's reach. The gateway is the only way to the server (the server listens where only
the gateway reaches it, and its own auth string is known to the gateway alone). Each client sends its role's string
as Prefect's clients send any auth string (PREFECT_API_AUTH_STRING: HTTP Basic, and the first message of a
websocket); the gateway maps it to a role, checks the request against that role's rules below, and forwards what is
allowed with the server's string: 401 for no or an unknown credential, 403 for a request the role may not make.

    PREFECT_SERVER_API_AUTH_STRING=...         the server's string (upstream)
    SHAPCA_PREFECT_OPERATOR_AUTH_STRING=operator:...  SHAPCA_PREFECT_TRAINER_AUTH_STRING=trainer:...
    SHAPCA_PREFECT_WATCHER_AUTH_STRING=watcher:...    (optional)
    python prefect_gateway.py --upstream http://127.0.0.1:4201 --host 127.0.0.1 --port 4200

Roles (paths under /api):

- operator: everything (pools, deployments, automations, blocks, flow runs, the UI);
- trainer (workers and the flow runs they start): reads; a worker's polls, heartbeats and channel (never creating a
  pool: the channel's hello is forwarded with `create_pool_if_not_found` false); its flow runs' states, task runs,
  subflow runs (not of a deployment), logs, artifacts, events and concurrency slots. Refused: creating, changing,
  pausing or deleting deployments, pools, queues, automations, blocks and variables; creating a deployment's flow run;
  asking for a cancellation (state CANCELLING); changing a flow run's parameters or job variables;
- watcher: reads only (GET, and the POST queries that read: .../filter, /count, /history, ...; the events and logs
  subscriptions), never a block document's secret values.

Health probes (GET /api/health, /api/ready) and the UI's static files stay open, as Prefect serves them. This file
needs only starlette, httpx, websockets and uvicorn (all Prefect dependencies) and nothing of this project, so it runs
from the Prefect server image (infra/docker-compose.yml) or any Prefect install.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

import httpx
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

log = logging.getLogger("prefect_gateway")

API = "/api"
ROLES = ("operator", "trainer", "watcher")
ROLE_ENV = {role: f"SHAPCA_PREFECT_{role.upper()}_AUTH_STRING" for role in ROLES}
UPSTREAM_ENV = "PREFECT_SERVER_API_AUTH_STRING"
MAX_BODY = 64 * 1024 * 1024  # a request the gateway reads whole before forwarding (flow run logs come in batches)
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "authorization",
    "content-length",
    "content-encoding",
}
OPEN_PROBES = {"/health", "/ready"}
WORKER_CHANNEL = re.compile(r"^/work_pools/[^/]+/workers/connect$")

# A rule: methods, a path pattern under /api, and an optional check of the request that returns a refusal or None.
Check = Callable[[str, dict], "str | None"]


@dataclass(frozen=True)
class Rule:
    methods: frozenset[str]
    pattern: re.Pattern
    check: Check | None = None

    def matches(self, method: str, path: str) -> bool:
        return method in self.methods and self.pattern.fullmatch(path) is not None


def _rule(methods: str, pattern: str, check: Check | None = None) -> Rule:
    return Rule(frozenset(methods.split()), re.compile(pattern), check)


def _no_secrets(query: str, body: dict) -> str | None:
    # Any spelling, any value, in the query (percent-decoded) or in a JSON body (POST /block_documents/filter).
    asked = "include_secrets" in unquote(query).lower() or "include_secrets" in body
    return "block secrets are not readable with this role" if asked else None


def _subflow_only(query: str, body: dict) -> str | None:
    if body.get("deployment_id") or body.get("work_queue_name") or body.get("work_queue_id"):
        return "a flow run of a deployment is created by the operator, not by a worker"
    return None


def _no_cancel_request(query: str, body: dict) -> str | None:
    state = (body.get("state") or {}).get("type", "")
    return "asking for a cancellation is the operator's" if str(state).upper() == "CANCELLING" else None


# A flow run's parameters and job variables say what runs and where: the deployment (the operator) sets them; a
# worker and the flow run itself change only the bookkeeping fields (name, version, pid, retry policy, tags, labels).
_FLOW_RUN_OPERATOR_FIELDS = {"parameters", "job_variables"}


def _flow_run_own_fields(query: str, body: dict) -> str | None:
    taken = sorted(_FLOW_RUN_OPERATOR_FIELDS & set(body))
    return f"a flow run's {taken} are not a worker's to change" if taken else None


_READ_POSTS = (
    r"/.+/(filter|count|paginate|history)|/flow_runs/lateness|/events/count-by/[^/]+|/ui/.+"
    r"|/work_pools/[^/]+/concurrency_status|/work_queues/[^/]+/concurrency_status|(/automations)?/templates/validate"
)
READ = (
    _rule("GET HEAD", r"/.*"),
    _rule("POST", _READ_POSTS),
    _rule("WS", r"/events/out|/logs/out"),
)
RULES: dict[str, tuple[Rule, ...]] = {
    "operator": (_rule("GET HEAD POST PUT PATCH DELETE WS", r"/.*"),),
    "trainer": (
        *READ,
        # The worker: polls, heartbeats and its channel; it runs a flow run and reports on it.
        _rule("POST", r"/work_pools/[^/]+/(get_scheduled_flow_runs|workers/heartbeat)|/work_queues/[^/]+/get_runs"),
        _rule("WS", WORKER_CHANNEL.pattern),
        _rule("POST", r"/flow_runs/", _subflow_only),
        _rule("POST", r"/flow_runs/[^/]+/set_state", _no_cancel_request),
        _rule("PATCH", r"/flow_runs/[^/]+", _flow_run_own_fields),
        _rule("PATCH", r"/flow_runs/[^/]+/labels"),
        _rule("POST", r"/flows/|/task_runs/|/task_runs/[^/]+/set_state|/logs/|/artifacts/|/events"),
        _rule("PATCH", r"/task_runs/[^/]+|/artifacts/[^/]+"),
        _rule("WS", r"/events/in"),
        _rule(
            "POST",
            r"/v2/concurrency_limits/(increment|decrement|increment-with-lease|decrement-with-lease)"
            r"|/v2/concurrency_limits/leases/[^/]+/renew|/concurrency_limits/(increment|decrement)",
        ),
    ),
    "watcher": tuple(Rule(r.methods, r.pattern, _no_secrets) for r in READ),
}


def _not_canonical(path: str) -> str | None:
    """Why `path` could mean another path upstream, or None. The rules match the path as decoded here; an HTTP client
    removes dot segments before sending (`/ui/../deployments/x` reaches the server as `/deployments/x`), and a `%` left
    after decoding is decoded again by the server. So only a path that is its own normal form is checked at all."""
    segments = path.split("/")[1:]
    if not path.startswith("/") or "%" in path or "\\" in path:
        return "the path must start with / and hold no % or backslash after decoding"
    if any(segment in (".", "..") for segment in segments) or "" in segments[:-1]:
        return "the path must hold no '.', '..' or empty segment"
    return None


def decide(role: str, method: str, path: str, query: str = "", body: bytes = b"") -> str | None:
    """None if `role` may make the request (`path` under /api), else why not."""
    if (odd := _not_canonical(path)) is not None:
        return odd
    for rule in RULES[role]:
        if rule.matches(method, path):
            if rule.check is None:
                return None
            try:
                parsed = json.loads(body) if body else {}
            except ValueError:
                return "the request body is not JSON"
            return rule.check(query, parsed if isinstance(parsed, dict) else {})
    return f"role {role} may not {method} {API}{path}"


def _basic(auth_string: str) -> str:
    return "Basic " + base64.b64encode(auth_string.encode()).decode()


class Gateway:
    def __init__(self, upstream: str, upstream_auth: str, roles: dict[str, str], timeout: float = 300.0):
        if not upstream_auth:
            raise ValueError(f"{UPSTREAM_ENV} is empty: the Prefect server behind the gateway must require it")
        strings = [upstream_auth, *roles.values()]
        if len(set(strings)) != len(strings):
            raise ValueError("every role's auth string must differ from the others and from the server's")
        for role, value in roles.items():
            if role not in ROLES or len(value) < 12:
                raise ValueError(f"{ROLE_ENV.get(role, role)}: expected a role of {ROLES} with at least 12 characters")
        self.upstream = upstream.rstrip("/")
        self.upstream_auth = upstream_auth
        self.roles = roles
        self.client = httpx.AsyncClient(timeout=timeout)

    def role_of_string(self, presented: str | None) -> str | None:
        found = None
        for role, value in self.roles.items():  # every comparison runs: the time says nothing about the match
            if presented is not None and hmac.compare_digest(presented.encode(), value.encode()):
                found = role
        return found

    def role_of_header(self, header: str | None) -> str | None:
        scheme, _, encoded = (header or "").partition(" ")
        if scheme != "Basic":
            return None
        try:
            return self.role_of_string(base64.b64decode(encoded, validate=True).decode())
        except (binascii.Error, UnicodeDecodeError):
            return None

    async def http(self, request: Request) -> Response:
        path, method = request.url.path, request.method
        if not (path == API or path.startswith(API + "/")):
            if method in ("GET", "HEAD"):  # the UI's files, public as Prefect serves them
                return await self._forward(request, b"", authorize=False)
            return JSONResponse({"exception_message": "Not Found"}, status_code=404)
        sub = path[len(API) :] or "/"
        if method == "GET" and sub in OPEN_PROBES:
            return await self._forward(request, b"", authorize=False)
        role = self.role_of_header(request.headers.get("authorization"))
        if role is None:
            log.info("- %s %s -> 401", method, path)
            return JSONResponse({"exception_message": "Unauthorized"}, status_code=401)
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"exception_message": "Request body too large"}, status_code=413)
        refusal = decide(role, method, sub, request.url.query, body)
        if refusal is not None:
            log.info("%s %s %s -> 403 (%s)", role, method, path, refusal)
            return JSONResponse({"exception_message": f"Forbidden: {refusal}"}, status_code=403)
        response = await self._forward(request, body, authorize=True)
        log.info("%s %s %s -> %s", role, method, path, response.status_code)
        return response

    async def _forward(self, request: Request, body: bytes, authorize: bool) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        if authorize:
            headers["Authorization"] = _basic(self.upstream_auth)
        url = self.upstream + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        try:
            upstream = await self.client.request(request.method, url, headers=headers, content=body)
        except httpx.HTTPError as exc:
            log.warning("upstream %s %s failed: %s", request.method, request.url.path, type(exc).__name__)
            return JSONResponse({"exception_message": "Prefect server unavailable"}, status_code=502)
        out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        return Response(upstream.content, status_code=upstream.status_code, headers=out)

    async def websocket(self, websocket: WebSocket) -> None:
        path = websocket.url.path
        sub = path[len(API) :] if path.startswith(API + "/") else None
        if sub is None or "prefect" not in websocket.scope.get("subprotocols", []):
            await websocket.close(code=1008)  # Prefect's sockets speak its subprotocol, authenticated by message
            return
        await websocket.accept(subprotocol="prefect")
        try:
            first = json.loads(await asyncio.wait_for(websocket.receive_text(), timeout=30))
        except (TimeoutError, ValueError, WebSocketDisconnect, KeyError):
            await websocket.close(code=1008, reason="Expected 'auth' message")
            return
        token = first.get("token") if isinstance(first, dict) and first.get("type") == "auth" else None
        role = self.role_of_string(token if isinstance(token, str) else None)
        if role is None:
            log.info("- WS %s -> closed (unauthenticated)", path)
            await websocket.close(code=1008, reason="Invalid token")
            return
        refusal = decide(role, "WS", sub)
        if refusal is not None:
            log.info("%s WS %s -> closed (%s)", role, path, refusal)
            await websocket.close(code=1008, reason=f"Forbidden: {refusal}"[:120])
            return
        url = (
            "ws"
            + self.upstream.removeprefix("http")
            + path
            + (f"?{websocket.url.query}" if websocket.url.query else "")
        )
        try:
            async with websockets.connect(
                url,
                subprotocols=[websockets.Subprotocol("prefect")],
                additional_headers={"Authorization": _basic(self.upstream_auth)},
                max_size=None,
            ) as upstream:
                await upstream.send(json.dumps({"type": "auth", "token": self.upstream_auth}))
                log.info("%s WS %s -> open", role, path)
                hello = role != "operator" and WORKER_CHANNEL.fullmatch(sub) is not None
                await self._relay(websocket, upstream, rewrite_hello=hello)
        except (OSError, websockets.InvalidHandshake) as exc:
            log.warning("upstream WS %s failed: %s", path, type(exc).__name__)
            await _close(websocket, 1011, "Prefect server unavailable")

    async def _relay(self, client: WebSocket, upstream, rewrite_hello: bool) -> None:
        async def to_upstream():
            first = True
            while True:
                message = await client.receive()
                if message["type"] == "websocket.disconnect":
                    await upstream.close()
                    return
                data = message.get("text") if message.get("text") is not None else message.get("bytes")
                if first and rewrite_hello and isinstance(data, str):
                    data = _without_pool_creation(data)
                first = False
                await upstream.send(data)

        async def to_client():
            try:
                async for data in upstream:
                    await (client.send_text(data) if isinstance(data, str) else client.send_bytes(data))
            except websockets.ConnectionClosed:
                pass
            await _close(client, upstream.close_code or 1000, upstream.close_reason or "")

        tasks = [asyncio.ensure_future(to_upstream()), asyncio.ensure_future(to_client())]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for task in done:
            if (
                not task.cancelled()
                and (exc := task.exception()) is not None
                and not isinstance(exc, WebSocketDisconnect)
            ):
                log.debug("websocket relay ended: %r", exc)

    def app(self) -> Starlette:
        methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

        @contextlib.asynccontextmanager
        async def lifespan(app):
            yield
            await self.client.aclose()

        return Starlette(
            routes=[Route("/{path:path}", self.http, methods=methods), WebSocketRoute("/{path:path}", self.websocket)],
            lifespan=lifespan,
        )


def _without_pool_creation(frame: str) -> str:
    """A worker's hello with `create_pool_if_not_found` off: pools are the operator's, a worker only serves them."""
    try:
        message = json.loads(frame)
    except ValueError:
        return frame
    if isinstance(message, dict) and isinstance(message.get("payload"), dict):
        message["payload"]["create_pool_if_not_found"] = False
        return json.dumps(message)
    return frame


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    # Codes 1005, 1006 and 1015 only describe a connection; they cannot be sent.
    code = code if 1000 <= code < 5000 and code not in (1005, 1006, 1015) else 1011
    try:
        await websocket.close(code=code, reason=reason[:120])
    except RuntimeError:
        pass  # already closed


def gateway_from_env(upstream: str, env: dict[str, str] | None = None) -> Gateway:
    env = dict(os.environ) if env is None else env
    roles = {role: env[key] for role, key in ROLE_ENV.items() if env.get(key)}
    missing = [ROLE_ENV[r] for r in ("operator", "trainer") if r not in roles]
    if missing or not env.get(UPSTREAM_ENV):
        raise SystemExit(f"set {', '.join(missing + ([] if env.get(UPSTREAM_ENV) else [UPSTREAM_ENV]))}")
    return Gateway(upstream, env[UPSTREAM_ENV], roles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="the Prefect server's base URL, e.g. http://127.0.0.1:4201")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is ours, without the URL query
    gateway = gateway_from_env(args.upstream)
    uvicorn.run(gateway.app(), host=args.host, port=args.port, log_level="warning", ws_max_size=MAX_BODY)


if __name__ == "__main__":
    main()
