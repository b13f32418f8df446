"""`mlflow models serve` under test: start it on 127.0.0.1, time 4-row requests, send the hostile battery, read RSS.

Used by `shapca bench serve` and by tests/test_serving.py. Everything here is a client of the HTTP server: the model
code that answers is whatever the server process imports (``code_root`` puts another checkout first on its path, so
one harness measures two commits).

Numbers: latency of one request = wall time from sending to the full answer; rows/s = rows sent / total wall time of
the sequential timed requests; p50/p95 = nearest-rank percentiles of the latencies. RSS = the resident set of the
server process and all its children (uvicorn's worker), from psutil.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

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


# Logs the benchmark model: a MiniLM NER model with the default Shap-CA config (random heads: the cost is the same as
# a trained one's), logged like a trained model to a sqlite store. It runs as a script in a child process so that the
# code that LOGS the model is the code that SERVES it: with `code_root` (another commit's checkout) both come from that
# checkout. The script uses only the API that every benchmarked commit has (from_config, save_pretrained,
# setup_tracking, log_shapca_model) and prints the two URIs as its last line.
_LOG_BENCH_MODEL = """
import json, sys
from pathlib import Path

import mlflow
import torch

from components.model.config import ShapCAConfig
from components.model.shapca import ShapCA
from components.tracking.mlflow_setup import setup_tracking
from components.tracking.pyfunc_model import log_shapca_model

root, encoder = Path(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
ShapCA.from_config(ShapCAConfig(text_encoder=encoder), "ner", ["PER", "LOC", "ORG", "MISC"]).save_pretrained(
    root / "best")
uri = f"sqlite:///{root / 'mlflow.db'}"
setup = setup_tracking("bench-serve", tracking_uri=uri, artifact_location=(root / "artifacts").as_uri())
mlflow.set_tracking_uri(uri)
with mlflow.start_run(experiment_id=setup.experiment_id):
    info = log_shapca_model(root / "best", "ner")
print(json.dumps([info.model_uri, uri]))
"""


def log_bench_model(root: Path, encoder: str, code_root: Path | None = None) -> tuple[str, str]:
    """Log the benchmark model (see _LOG_BENCH_MODEL) under root; returns (model URI, tracking URI)."""
    env = os.environ | ({"PYTHONPATH": str(code_root)} if code_root is not None else {})
    done = subprocess.run(
        [sys.executable, "-c", _LOG_BENCH_MODEL, str(root), encoder],
        env=env,
        capture_output=True,
        text=True,
        cwd=str(code_root) if code_root is not None else None,
    )
    if done.returncode != 0:
        raise RuntimeError(f"logging the benchmark model failed ({done.returncode}):\n{done.stderr[-3000:]}")
    model_uri, tracking_uri = json.loads(done.stdout.strip().splitlines()[-1])
    return model_uri, tracking_uri


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    """The requests of issue 14, by name."""
    return {
        "text_5mb": [{"text": ("word " * (FIVE_MB // 5))}],
        "text_10mb": [{"text": ("word " * (TEN_MB // 5))}],
        "rows_10000": [{"text": TWEETS[i % len(TWEETS)]} for i in range(10_000)],
        "image_traversal": [{"text": "Tony lives in Paris", "image": "../../etc/hostname"}],
        "image_dev_zero": [{"text": "Tony lives in Paris", "image": "/dev/zero"}],
    }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class ServeBenchmark:
    requests: int
    rows_per_request: int
    rows_per_second: float
    p50_ms: float
    p95_ms: float
    rss_before_mb: float
    rss_after_battery_mb: float
    rows_per_second_after_battery: float  # the same requests right after the battery (bounded: see below)
    p50_ms_after_battery: float | None
    battery: dict[str, dict] = field(default_factory=dict)
    serves_after_battery: bool = False


def throughput(
    url: str,
    requests: int,
    rows_per_request: int = 4,
    warmup: int = 3,
    timeout: float = 90.0,
    budget_s: float | None = None,
) -> tuple[float, list[float]]:
    """(rows/s, latencies in s) of sequential requests of `rows_per_request` tweets each. With `budget_s`, a request
    that fails or times out counts no rows, and sending stops once the budget is spent (a server still busy with
    earlier requests then scores what it managed); without it, any failure is an error."""

    def records(i: int) -> list[dict]:
        return [{"text": TWEETS[(i * rows_per_request + r) % len(TWEETS)]} for r in range(rows_per_request)]

    for i in range(warmup):
        invoke(url, records(i))
    latencies = []
    started = time.perf_counter()
    for i in range(requests):
        if budget_s is not None and time.perf_counter() - started > budget_s:
            break
        answer = invoke(url, records(i), timeout=timeout)
        if answer.status != 200:
            if budget_s is not None:
                continue
            raise RuntimeError(f"a plain {rows_per_request}-row request failed: {answer.status} {answer.body[:300]}")
        latencies.append(answer.seconds)
    return len(latencies) * rows_per_request / (time.perf_counter() - started), latencies


def run_serve_benchmark(
    server: ServeProcess,
    requests: int = 40,
    battery_timeout: float = 90.0,
    settle_seconds: float = 5.0,
    after_budget_s: float = 60.0,
) -> ServeBenchmark:
    rows_per_second, latencies = throughput(server.url, requests)
    rss_before = server.rss_bytes()
    battery = {}
    for name, records in hostile_battery().items():
        answer = invoke(server.url, records, timeout=battery_timeout)
        battery[name] = {"status": answer.status, "seconds": round(answer.seconds, 2), "body": answer.body[:300]}
    time.sleep(settle_seconds)
    rss_after = server.rss_bytes()
    # The same workload again, bounded to `after_budget_s` (30 s per request at most): a server that is still
    # computing what the battery left behind answers late or not at all.
    after_rate, after_latencies = throughput(server.url, requests, warmup=0, timeout=30.0, budget_s=after_budget_s)
    return ServeBenchmark(
        requests=requests,
        rows_per_request=4,
        rows_per_second=round(rows_per_second, 2),
        p50_ms=round(percentile(latencies, 50) * 1000, 1),
        p95_ms=round(percentile(latencies, 95) * 1000, 1),
        rss_before_mb=round(rss_before / 2**20, 1),
        rss_after_battery_mb=round(rss_after / 2**20, 1),
        rows_per_second_after_battery=round(after_rate, 2),
        p50_ms_after_battery=round(percentile(after_latencies, 50) * 1000, 1) if after_latencies else None,
        battery=battery,
        serves_after_battery=bool(after_latencies),
    )
