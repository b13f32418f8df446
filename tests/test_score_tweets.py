"""The score-tweets deployment's flow end to end with real parts: a Prefect server (tests/prefect_harness.py), a
sqlite MLflow registry holding a tiny random model as `shapca-twitter2017@champion`, a local Dask cluster of two
worker processes, and `shapca score` (the command a user types) in a process of its own.

A run is killed with SIGKILL (the flow's process and its Dask workers) once some parts are written; the next run
resumes from those parts, untouched, and the output holds every input line once, in order. S3 input and output
(moto) in Parquet, where a rerun scores nothing and rewrites no part. The library's parsing of bad lines is checked
without servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import mlflow
import psutil
import pytest
import torch
from prefect_harness import PrefectEnv, make_env, start_server

from components.common.net import free_port
from components.data.jsonl_shards import parse_line, plan_shards, read_shard
from components.model.shapca import ShapCA
from components.model.shapca_config import ShapCAConfig
from components.runs.batch_scoring import MANIFEST, read_predictions
from components.serving.packaging import log_shapca_model
from components.tracking.mlflow_setup import setup_tracking

SHAPCA = str(Path(sys.executable).with_name("shapca"))
BAD_LINES = {  # line number -> (the line, the start of its error)
    10: ("{not json", "line 10: not valid JSON"),
    20: ('{"id": "t019", "txt": "no text field"}', "line 20: no 'text' field"),
    30: ('{"id": "t029", "text": ""}', "line 30: text is empty"),  # parsed here, refused by the model
    40: ("", "line 40: empty line"),
}


def _input_lines(n: int) -> list[str]:
    lines = [json.dumps({"id": f"t{i:03d}", "text": f"Obama visits Paris number {i}"}) for i in range(n)]
    for number, (line, _) in BAD_LINES.items():
        if number <= n:
            lines[number - 1] = line
    return lines


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tiny_bert_dir) -> str:
    """A sqlite registry with a tiny NER model as version 1 of shapca-twitter2017, alias champion."""
    root = tmp_path_factory.mktemp("score-registry")
    torch.manual_seed(0)
    config = ShapCAConfig(text_encoder=str(tiny_bert_dir), align_dim=16, permutations=4)
    ShapCA.from_config(config, "ner", ["PER", "LOC", "ORG", "OTHER"]).save_pretrained(root / "best")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    setup = setup_tracking("score-tests", tracking_uri=uri)
    with mlflow.start_run(experiment_id=setup.experiment_id) as run:
        info = log_shapca_model(root / "best", "ner")
    version = mlflow.register_model(info.model_uri, "shapca-twitter2017")
    mlflow.MlflowClient(uri, uri).set_registered_model_alias("shapca-twitter2017", "champion", version.version)
    assert version.run_id == run.info.run_id
    return uri


@pytest.fixture(scope="module")
def prefect(tmp_path_factory, registry, project_root):
    penv = make_env(
        tmp_path_factory.mktemp("score-prefect"),
        free_port(),
        {"MLFLOW_TRACKING_URI": registry, "SHAPCA_DASK_WORKERS": "2", "OMP_NUM_THREADS": "1"},
    )
    start_server(penv, project_root)
    try:
        yield penv
    finally:
        penv.stop_all()


def _score_args(input: str, output: str, *extra: str) -> list[str]:
    return [SHAPCA, "score", "--input", input, "--output", output, *extra]


def _run(penv: PrefectEnv, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict:
    done = subprocess.run(args, cwd=cwd, env=env or penv.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return json.loads(done.stdout[done.stdout.index("{\n") :])


def _kill_family(pid: int) -> None:
    """SIGKILL a process and every process under it (the flow, the Dask nanny and workers), collected first."""
    family = [pid] + [p.pid for p in psutil.Process(pid).children(recursive=True)]
    for member in family:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _job_dir(output: Path) -> Path:
    [model_dir] = output.iterdir()
    [job_dir] = model_dir.iterdir()
    return job_dir


@pytest.mark.slow
@pytest.mark.timeout(360)
def test_a_killed_run_resumes_without_losing_or_repeating_rows(tmp_path, prefect, registry, project_root):
    source = tmp_path / "tweets.jsonl"
    source.write_text("\n".join(_input_lines(100)) + "\n")
    output = tmp_path / "scores"
    args = _score_args(str(source), str(output), "--lines-per-shard", "2")  # 50 shards: a kill lands mid-way

    # 1. Killed (SIGKILL, no chance to clean up) once a few parts are on disk.
    first = prefect.start("score-killed", args, project_root)
    deadline = time.monotonic() + 240
    parts: list[Path] = []
    while time.monotonic() < deadline and first.alive():
        parts = sorted(output.glob("*/*/part-*.jsonl")) if output.exists() else []
        if len(parts) >= 3:
            _kill_family(first.popen.pid)
            break
        time.sleep(0.05)
    first.popen.wait(timeout=30)
    assert first.popen.returncode == -signal.SIGKILL, first.log()
    job_dir = _job_dir(output)
    survived = {p.name: p.stat().st_mtime_ns for p in job_dir.glob("part-*.jsonl")}
    assert 3 <= len(survived) < 50, f"the kill did not land mid-way: {len(survived)} of 50 parts"
    assert not (job_dir / MANIFEST).exists()

    # 2. The next run resumes: the surviving parts are reused untouched, the rest scored.
    content = _run(prefect, args, project_root)
    assert content["counts"] == {
        "rows": 100,
        "predicted": 100 - len(BAD_LINES),
        "errors": len(BAD_LINES),
        "truncated": 0,
        "shards": 50,
        "shards_reused": len(survived),
    }
    assert {p["part"] for p in content["output"]["parts"] if p["reused"]} == set(survived)
    assert all(job_dir.joinpath(name).stat().st_mtime_ns == mtime for name, mtime in survived.items())
    client = mlflow.MlflowClient(registry, registry)
    champion = client.get_model_version_by_alias("shapca-twitter2017", "champion")
    assert content["model"] == {
        "name": "shapca-twitter2017",
        "version": str(champion.version),
        "requested": "champion",
        "uri": f"models:/shapca-twitter2017/{champion.version}",
        "run_id": champion.run_id,
    }
    assert content["input"]["sha256"] == plan_shards(str(source), 2).sha256
    assert content["input"]["lines"] == 100
    assert json.loads((job_dir / MANIFEST).read_text()) == content
    # Scored on the cluster's two worker processes, not in the flow's own.
    pids = {part["pid"] for part in content["output"]["parts"] if not part["reused"]}
    assert len(pids) == 2

    rows = read_predictions(str(job_dir))
    assert [row["line"] for row in rows] == list(range(1, 101))
    expected_ids = [None if n == 10 else f"t{n - 1:03d}" for n in range(1, 101)]
    expected_ids[39] = None  # the empty line has no id either
    assert [row["id"] for row in rows] == expected_ids
    for number, (_, message) in BAD_LINES.items():
        assert rows[number - 1]["error"].startswith(message), rows[number - 1]
    good = [row for row in rows if row["line"] not in BAD_LINES]
    assert all(row["error"] is None and isinstance(row["entities"], list) for row in good)
    assert all(row["truncated"] is None for row in rows)

    # Every run is a flow run on the server; the finished ones published their summary.
    runs = prefect.api("POST", "/flow_runs/filter", {"limit": 20})
    states = sorted(run["state"]["type"] for run in runs)  # type: ignore[index]
    assert "COMPLETED" in states, states
    artifacts = prefect.api("POST", "/artifacts/filter", {"artifacts": {"key": {"any_": ["score-tweets"]}}})
    assert artifacts and "shapca-twitter2017/1" in artifacts[0]["data"]  # type: ignore[index]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_s3_input_to_s3_parquet_output_and_a_rerun_reuses_every_part(tmp_path, prefect, s3_env, project_root):
    lines = _input_lines(12)
    lines[4] = "[1, 2]"  # valid JSON, not an object
    s3 = boto3.client("s3", endpoint_url=s3_env.endpoint_url)
    s3.put_object(Bucket=s3_env.bucket, Key="in/tweets.jsonl", Body=("\n".join(lines)).encode())  # no final newline
    env = prefect.env | {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "SHAPCA_S3", "MLFLOW_S3"))}
    source, output = f"s3://{s3_env.bucket}/in/tweets.jsonl", f"s3://{s3_env.bucket}/scores"
    args = _score_args(source, output, "--lines-per-shard", "5", "--format", "parquet")

    content = _run(prefect, args, project_root, env)
    assert content["counts"]["rows"] == 12 and content["counts"]["shards"] == 3
    assert content["counts"]["errors"] == 2 and content["counts"]["shards_reused"] == 0
    job_url = content["output"]["url"]
    assert job_url.startswith(output + "/shapca-twitter2017-v1/") and job_url.endswith("-5")
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=s3_env.bucket, Prefix="scores/")["Contents"]]
    assert sorted(k.rsplit("/", 1)[1] for k in keys) == [MANIFEST, *(f"part-0000{i}.parquet" for i in range(3))]
    rows = read_predictions(job_url)
    assert [row["line"] for row in rows] == list(range(1, 13))
    assert rows[4]["error"] == "line 5: expected a JSON object, got list"
    assert rows[9]["error"].startswith("line 10: not valid JSON")
    assert rows[11]["id"] == "t011" and rows[11]["error"] is None  # the last line, without its newline

    # A rerun with the same input and model scores nothing and rewrites no part (S3 keeps each object's write time).
    written = {item["Key"]: item["LastModified"] for item in s3.list_objects_v2(Bucket=s3_env.bucket)["Contents"]}
    time.sleep(1)  # LastModified has one-second resolution
    again = _run(prefect, args, project_root, env)
    assert again["counts"]["shards_reused"] == 3 and again["counts"]["rows"] == 12
    rewritten = {item["Key"]: item["LastModified"] for item in s3.list_objects_v2(Bucket=s3_env.bucket)["Contents"]}
    assert {k: v for k, v in rewritten.items() if "/part-" in k} == {k: v for k, v in written.items() if "/part-" in k}


# ---------------------------------------------------------------------------------------------------------------------
# The library's reading of the input, without servers


def test_shards_cover_every_line_once_whatever_the_line_endings(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"text": "a"}\r\n\n{"text": "b"}\n{"id": 7, "text": "c"}\nnot json')
    plan = plan_shards(str(path), 2)
    assert plan.lines == 5 and [s.lines for s in plan.shards] == [2, 2, 1]
    rows = [row for shard in plan.shards for row in read_shard(str(path), shard, 10_000)]
    assert [row.line for row in rows] == [1, 2, 3, 4, 5]
    assert rows[0].fields == {"text": "a"} and rows[3].id == 7 and rows[3].fields == {"text": "c"}
    assert rows[1].error is not None and rows[1].error.startswith("line 2: empty line")
    assert rows[4].error is not None and rows[4].error.startswith("line 5: not valid JSON")
    assert plan_shards(str(path), 5).shards[0].end == path.stat().st_size


def test_each_bad_line_names_its_line_and_what_was_expected():
    assert parse_line(3, b"\xff{}", 100).error == "line 3: not valid UTF-8 (byte 0xff at column 1)"
    assert parse_line(4, b"x" * 101, 100).error == "line 4: line is 101 bytes, over the limit of 100"
    assert parse_line(5, b'{"id": [1], "text": "a"}', 100).error == "line 5: id must be a string or a number, got list"
    missing = parse_line(6, b'{"id": "q"}', 100)
    assert missing.id == "q" and missing.error is not None and missing.error.startswith("line 6: no 'text' field")
