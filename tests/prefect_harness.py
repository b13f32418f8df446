"""Real Prefect processes for end-to-end tests: a server on 127.0.0.1, workers, and the `prefect` CLI against them.

Everything lives under one temporary PREFECT_HOME with its own sqlite database, so a test never touches the user's
Prefect profile. Every process is started in its own session and stopped by its id, together with every process it
spawned (the process worker starts each flow run in a session of its own, so a group kill alone would miss it).
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

PREFECT = str(Path(sys.executable).with_name("prefect"))
_UUID = re.compile(r"UUID:\s*([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


@dataclass
class ManagedProcess:
    """A child process started in its own session; `stop()` ends it and every descendant, by pid."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    def log(self, tail_chars: int = 4000) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        return text[-tail_chars:]

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace_s: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        try:
            # Collected before anything dies: an orphaned grandchild is re-parented and cannot be found afterwards.
            family = [self.popen.pid] + [p.pid for p in psutil.Process(self.popen.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = [self.popen.pid]
        _signal_all(family, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_running(pid) for pid in family):
            time.sleep(0.2)
        # The worker answers SIGTERM with a graceful shutdown that can hang once the server is gone.
        _signal_all([pid for pid in family if _running(pid)], signal.SIGKILL)
        self.popen.wait(timeout=10)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


@dataclass
class PrefectEnv:
    """The environment every child process gets: its own PREFECT_HOME, database and API URL."""

    home: Path
    api_url: str
    env: dict[str, str]
    processes: list[ManagedProcess] = field(default_factory=list)

    def start(self, name: str, args: list[str], cwd: Path) -> ManagedProcess:
        log_path = self.home / f"{name}.log"
        with open(log_path, "w", encoding="utf-8") as log:
            popen = subprocess.Popen(
                args, cwd=cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        proc = ManagedProcess(name, popen, log_path)
        self.processes.append(proc)
        return proc

    def cli(self, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
        """`prefect <args>`; a non-zero exit raises with the command's output."""
        result = subprocess.run(
            [PREFECT, *args], cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            command = " ".join(args)
            raise AssertionError(
                f"`prefect {command}` exited {result.returncode}\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
            )
        return result

    def auth_headers(self) -> dict[str, str]:
        """The Authorization header Prefect's own client sends with this environment's PREFECT_API_AUTH_STRING."""
        auth = self.env.get("PREFECT_API_AUTH_STRING")
        return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}

    def api(self, method: str, path: str, body: dict | None = None) -> dict | list:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.api_url}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json", **self.auth_headers()},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def flow_run(self, flow_run_id: str) -> dict:
        return self.api("GET", f"/flow_runs/{flow_run_id}")  # type: ignore[return-value]

    def stop_all(self) -> None:
        # Workers first: they would otherwise keep retrying a server that is already gone.
        for proc in sorted(self.processes, key=lambda p: p.name == "server"):
            proc.stop()


def make_env(tmp: Path, port: int, extra: dict[str, str] | None = None) -> PrefectEnv:
    home = tmp / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    api_url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_API_HOST="127.0.0.1",
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_SERVER_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_UI_ENABLED="false",
        PREFECT_CLI_PROMPT="false",
        # A terminal-less CLI: no rich colour codes in the output we parse.
        NO_COLOR="1",
        PREFECT_CLI_COLORS="false",
        PREFECT_CLI_WRAP_LINES="false",
    )
    env.update(extra or {})
    return PrefectEnv(home=home, api_url=api_url, env=env)


def start_server(penv: PrefectEnv, cwd: Path, timeout: float = 90) -> tuple[ManagedProcess, float]:
    """`prefect server start` on 127.0.0.1; returns once /api/health answers, with the seconds that took."""
    port = penv.env["PREFECT_SERVER_API_PORT"]
    t0 = time.monotonic()
    server = penv.start("server", [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", port], cwd)
    while time.monotonic() - t0 < timeout:
        if not server.alive():
            raise AssertionError(f"prefect server exited {server.popen.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(f"{penv.api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return server, time.monotonic() - t0
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"prefect server not healthy after {timeout}s:\n{server.log()}")


def start_worker(penv: PrefectEnv, pool: str, cwd: Path) -> ManagedProcess:
    return penv.start(f"worker-{pool}", [PREFECT, "worker", "start", "--pool", pool, "--limit", "1"], cwd)


def flow_run_id_from(output: str) -> str:
    """The flow run id `prefect deployment run` prints (`UUID: ...`)."""
    match = _UUID.search(output)
    if match is None:
        raise AssertionError(f"no flow run UUID in `prefect deployment run` output:\n{output}")
    return match.group(1)
