"""A real `mlflow models serve` process on 127.0.0.1, and the requests it is sent: the harness of the serving tests
(tests/test_serving.py) and of `shapca bench serve` (components/benchmarks/serving.py).

Everything here is a client of the HTTP server: the model code that answers is whatever the server process imports
(``code_root`` puts another checkout first on its path, so one harness measures two commits).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from components.common.net import free_port

# Short real-looking tweets (the serving workload: a handful of rows per request).
TWEETS = [
    "Obama visits the Golden Gate Bridge in San Francisco",
    "RT @nba : LeBron James scores 40 as the Lakers beat the Celtics in Boston",
    "Taylor Swift announces new album at the Grammys in Los Angeles",
    "Messi and Barcelona celebrate another title at Camp Nou",
    "Apple unveils the new iPhone in Cupertino on Tuesday",
    "Snow falls on Central Park as New York prepares for the storm",
    "Angela Merkel meets Emmanuel Macron in Berlin to discuss the EU budget",
    "Kawhi Leonard leads the Spurs past the Warriors",
]

FIVE_MB, TEN_MB = 5 * 1024 * 1024, 10 * 1024 * 1024


@dataclass
class Answer:
    status: int | None  # None: no answer within the client timeout
    seconds: float
    body: str  # the first 2,000 characters
    json: dict | None = None


@dataclass
class ServeProcess:
    popen: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_bytes(self) -> int:
        import psutil

        try:
            parent = psutil.Process(self.popen.pid)
            return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)])
        except psutil.NoSuchProcess:
            return 0

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM to the whole process group (mlflow and its uvicorn child), then SIGKILL to whatever of the group is
        left: uvicorn waits for running requests on SIGTERM, and an old server may be computing for minutes."""
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)


def start_serve(
    model_uri: str,
    tracking_uri: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    code_root: Path | None = None,
    timeout: float = 300,
) -> ServeProcess:
    """`mlflow models serve -m <model_uri> --env-manager local` on 127.0.0.1; returns once /ping answers."""
    port = free_port()
    bin_dir = Path(sys.executable).parent
    full_env = os.environ | {
        "MLFLOW_TRACKING_URI": tracking_uri,
        # mlflow execs `uvicorn` by name: the environment's bin directory must be on PATH
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        **(env or {}),
    }
    if code_root is not None:
        # `python -m` puts the working directory first on sys.path, before PYTHONPATH: both must name code_root.
        full_env["PYTHONPATH"] = str(code_root)
    log_file = open(log_path, "wb")
    popen = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            model_uri,
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=full_env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=str(code_root) if code_root is not None else None,
    )
    log_file.close()
    server = ServeProcess(popen, port, log_path)
    deadline = time.monotonic() + timeout
    while True:
        if popen.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited {popen.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.url}/ping", timeout=2):
                return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"mlflow models serve not answering /ping after {timeout:.0f}s:\n{server.log_tail()}")
        time.sleep(0.5)


def invoke(url: str, records: list[dict], timeout: float = 90.0, params: dict | None = None) -> Answer:
    payload = {"dataframe_records": records} | ({"params": params} if params else {})
    request = urllib.request.Request(
        f"{url}/invocations", data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read().decode(errors="replace")
    except (TimeoutError, OSError):
        return Answer(None, time.perf_counter() - started, "no answer within the client timeout")
    seconds = time.perf_counter() - started
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError:
        parsed = None
    return Answer(status, seconds, body[:2000], parsed)


def hostile_battery() -> dict[str, list[dict]]:
    """The hostile requests a served model must answer promptly and survive (issue 14), by name."""
    return {
        "text_5mb": [{"text": ("word " * (FIVE_MB // 5))}],
        "text_10mb": [{"text": ("word " * (TEN_MB // 5))}],
        "rows_10000": [{"text": TWEETS[i % len(TWEETS)]} for i in range(10_000)],
        "image_traversal": [{"text": "Tony lives in Paris", "image": "../../etc/hostname"}],
        "image_dev_zero": [{"text": "Tony lives in Paris", "image": "/dev/zero"}],
    }
