"""`shapca bench serve`: a served model's throughput, latency and RSS before and after the hostile battery, on the
harness of components/serving/harness.py.

Numbers: latency of one request = wall time from sending to the full answer; rows/s = rows sent / total wall time of
the sequential timed requests; p50/p95 = nearest-rank percentiles of the latencies. RSS = the resident set of the
server process and all its children (uvicorn's worker), from psutil.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from components.serving.harness import TWEETS, ServeProcess, hostile_battery, invoke

# Logs the benchmark model: a MiniLM model of Twitter-2017's task and labels with the paper's Shap-CA config (Shapley
# alignment, the context encoder trained whole, as in every measurement of docs/PERFORMANCE.md; written out, so that
# every commit builds the same model whatever its defaults say; random heads: the cost is the same as a trained
# one's), logged like a trained model to a sqlite store. It runs as a script in a child process so that the code that
# LOGS the model is the code that SERVES it: with `code_root` (another commit's checkout) both come from that checkout.
# The script uses only the API that every benchmarked commit has (get_spec, from_config, save_pretrained,
# setup_tracking, log_shapca_model, under their names before or after the serving package) and prints the two URIs
# as its last line.
_LOG_BENCH_MODEL = """
import json, sys
from pathlib import Path

import mlflow
import torch

from components.model.shapca import ShapCA
from components.tracking.mlflow_setup import setup_tracking

try:
    from components.datasets import get_spec
    from components.model.shapca_config import ShapCAConfig
    from components.serving.packaging import log_shapca_model
except ImportError:  # a commit before components/serving/
    from components.data.datasets import get_spec
    from components.model.config import ShapCAConfig
    from components.tracking.pyfunc_model import log_shapca_model

root, encoder = Path(sys.argv[1]), sys.argv[2]
spec = get_spec("twitter2017")
best = root / "best"
if len(sys.argv) > 3:  # a trained model's save_pretrained directory, logged as it is
    best = Path(sys.argv[3])
else:
    torch.manual_seed(0)
    paper = dict(text_encoder=encoder, context_mode="fusion", alignment="shapley", context_trainable_layers=None)
    config = ShapCAConfig(**{k: v for k, v in paper.items() if k in ShapCAConfig.model_fields})  # an older commit's
    ShapCA.from_config(config, spec.task, spec.labels).save_pretrained(best)
uri = f"sqlite:///{root / 'mlflow.db'}"
setup = setup_tracking("bench-serve", tracking_uri=uri, artifact_location=(root / "artifacts").as_uri())
mlflow.set_tracking_uri(uri)
with mlflow.start_run(experiment_id=setup.experiment_id):
    info = log_shapca_model(best, spec.task)
print(json.dumps([info.model_uri, uri]))
"""


def log_bench_model(
    root: Path, encoder: str, code_root: Path | None = None, model_dir: Path | None = None
) -> tuple[str, str]:
    """Log the benchmark model (see _LOG_BENCH_MODEL) under root, or with `model_dir` that trained Twitter-2017
    model's `save_pretrained` directory (logged by the same code that serves it); returns (model URI, tracking URI)."""
    env = os.environ | ({"PYTHONPATH": str(code_root)} if code_root is not None else {})
    done = subprocess.run(
        [sys.executable, "-c", _LOG_BENCH_MODEL, str(root), encoder, *([str(model_dir)] if model_dir else [])],
        env=env,
        capture_output=True,
        text=True,
        cwd=str(code_root) if code_root is not None else None,
    )
    if done.returncode != 0:
        raise RuntimeError(f"logging the benchmark model failed ({done.returncode}):\n{done.stderr[-3000:]}")
    model_uri, tracking_uri = json.loads(done.stdout.strip().splitlines()[-1])
    return model_uri, tracking_uri


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


def _records(i: int, rows_per_request: int) -> list[dict]:
    """The i-th request of the quiet path: `rows_per_request` tweets, cycling through TWEETS."""
    return [{"text": TWEETS[(i * rows_per_request + r) % len(TWEETS)]} for r in range(rows_per_request)]


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
        return _records(i, rows_per_request)

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


def compare_variants(
    urls: dict[str, str], requests: int, rows_per_request: int = 4, warmup: int = 3
) -> dict[str, dict[str, float]]:
    """The quiet path of one server per inference variant (`urls`: variant -> server URL), measured side by side:
    request i goes to every server in turn before request i + 1 goes to any, so whatever else the machine runs slows
    each variant alike. Per variant: rows/s = rows sent / the sum of its own latencies, p50/p95 nearest-rank.

    A variant whose answers equal the first variant's to the last digit is an error: that server did not apply it
    (a commit without the option ignores SHAPCA_SERVE_INFERENCE)."""
    first = next(iter(urls))
    answers: dict[str, str] = {}
    for variant, url in urls.items():
        for i in range(warmup):
            answer = invoke(url, _records(i, rows_per_request))
            if answer.status != 200:
                raise RuntimeError(f"variant {variant}: a warm-up request failed: {answer.status} {answer.body[:300]}")
            answers.setdefault(variant, answer.body)
    same = [variant for variant in urls if variant != first and answers[variant] == answers[first]]
    if same:
        raise RuntimeError(f"variants {same} answer exactly as {first!r}: their servers did not apply the option")
    latencies: dict[str, list[float]] = {variant: [] for variant in urls}
    for i in range(requests):
        for variant, url in urls.items():
            answer = invoke(url, _records(i, rows_per_request))
            if answer.status != 200:
                raise RuntimeError(f"variant {variant}: request {i} failed: {answer.status} {answer.body[:300]}")
            latencies[variant].append(answer.seconds)
    return {
        variant: {
            "rows_per_second": round(len(seconds) * rows_per_request / sum(seconds), 2),
            "p50_ms": round(percentile(seconds, 50) * 1000, 1),
            "p95_ms": round(percentile(seconds, 95) * 1000, 1),
        }
        for variant, seconds in latencies.items()
    }


def score_variants(
    model_uri: str, variants: list[str], dataset: str, data_dir: Path, context_generator: str = "blip2"
) -> dict[str, dict[str, float]]:
    """Each variant's scores on the dataset's test split, in process: the model loaded with
    ``model_config={"inference": variant}`` and scored by `evaluate_split`, as `shapca evaluate` scores a model."""
    import mlflow.pyfunc

    from components.config import DataConfig
    from components.serving.inference import INFERENCE_CONFIG_KEY, INFERENCE_ENV

    if os.environ.get(INFERENCE_ENV):
        raise ValueError(f"{INFERENCE_ENV} is set: it would override every variant's model_config; unset it")
    from components.training.data import load_training_data
    from components.training.evaluate import evaluate_split

    data = load_training_data(DataConfig(dataset=dataset, data_dir=data_dir, context_generator=context_generator))
    scores = {}
    for variant in variants:
        loaded = mlflow.pyfunc.load_model(model_uri, model_config={INFERENCE_CONFIG_KEY: variant})
        # MLflow drops a key the logged model_config lacks (a model logged before the option): say so, not score it
        applied = getattr(loaded.unwrap_python_model(), "inference", "plain")
        if applied != variant:
            raise RuntimeError(f"{model_uri} loaded as {applied!r}, not {variant!r}: its code has no such option")
        scores[variant] = evaluate_split(loaded.unwrap_python_model().model, data, "test").scores.as_dict("test")
    return scores
