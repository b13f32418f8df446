"""A training run as MLflow records it, the registry step, and every consumer of the registered model.

One small real run (Twitter-2017 subset, BLIP-2 contexts, tiny random BERT) is shared by the tests of this module.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from components.config import load_config

MODEL = "models:/shapca-twitter2017@champion"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_dir, data_dir):
    from components.runs.registration import register_and_promote
    from components.runs.training_run import train_and_log

    root = tmp_path_factory.mktemp("pipeline")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    cfg = load_config(
        "configs/default.yaml",
        [
            f"data.data_dir={data_dir}",
            "data.max_examples={train: 32, dev: 16, test: 16}",
            f"model.text_encoder={tiny_bert_dir}",
            "model.align_dim=16",
            "model.permutations=8",
            # the Shapley game's run logs the heatmap too (the default aligns by plain InfoNCE)
            "model.alignment=shapley",
            "train.batch_size=8",
            "train.epochs=2",
            f"train.output_dir={root / 'out'}",
            "tracking.experiment=pipeline-test",
            "tracking.allow_partial_dev=true",  # a capped dev split: promotable only because this test allows it
        ],
    )
    result = train_and_log(cfg)
    version, decision = register_and_promote(result, cfg)
    yield {"cfg": cfg, "result": result, "version": version, "decision": decision, "uri": uri, "root": root}
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


def test_the_run_records_config_lineage_metrics_and_artifacts(trained):
    client = MlflowClient(trained["uri"])
    run = client.get_run(trained["result"].run_id)
    params = run.data.params
    assert params["data.dataset"] == "twitter2017" and params["model.alignment"] == "shapley"
    assert params["lineage.data_version"].endswith(".dir")
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {  # lineage of the data: tests/test_run_inputs.py
        "twitter2017-train",
        "twitter2017-dev",
        "twitter2017-test",
        "twitter2017-contexts-blip2",
    }
    assert any(k.startswith("lineage.encoder.text/") for k in params)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "dev_f1")] == [1, 2]
    assert {"test_f1", "test_precision", "test_recall", "best_dev_f1"} <= set(run.data.metrics)
    assert 0.0 <= run.data.metrics["dev_probe_shapley_top1"] <= 1.0  # the alignment probe ran on dev
    assert 0.0 < run.data.metrics["dev_probe_context_gate"] < 1.0
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/test_confusion.png", "plots/shapley_heatmap.png"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "tables")} >= {"tables/test_per_type.csv"}


def test_the_first_version_becomes_champion(trained):
    assert trained["version"] == "1"
    assert trained["decision"].alias == "champion"
    client = MlflowClient(trained["uri"])
    assert str(client.get_model_version_by_alias("shapca-twitter2017", "champion").version) == "1"


def test_champion_predicts_and_bad_rows_get_errors_not_a_crash(trained):
    import mlflow

    model = mlflow.pyfunc.load_model(MODEL)
    frame = pd.DataFrame(
        {
            "text": [
                "Obama visits the Golden Gate Bridge in San Francisco",
                "",
                ["RT", "@user", ":", "Paris", "rocks"],
                "a tweet with an unreadable image",
            ],
            "context": ["a man in a suit near a red bridge", None, "the eiffel tower at night", None],
            "image": [None, None, None, b"not an image"],
        }
    )
    out = model.predict(frame)
    assert len(out) == 4
    assert out[0]["error"] is None and isinstance(out[0]["entities"], list)
    assert "text is empty" in out[1]["error"]
    assert out[2]["error"] is None
    # The tiny model has no image encoder: an image column is accepted and ignored, not an error.
    assert out[3]["error"] is None


def test_shapca_predict_writes_one_line_per_input(trained, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "Messi scores for Barcelona"}\n{"text": ""}\n')
    target = tmp_path / "out.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "cli", "predict", "--model", MODEL, "--input", str(source), "--output", str(target)],
        capture_output=True,
        text=True,
        env=os.environ | {"MLFLOW_TRACKING_URI": trained["uri"]},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["error"] is None and lines[1]["error"]


def test_evaluate_scores_a_registered_version(trained, data_dir):
    from components.runs.model_evaluation import evaluate_model_uri

    metrics = evaluate_model_uri(MODEL, "twitter2017", "test", data_dir, limit=16)
    assert metrics["test_f1"] == pytest.approx(trained["result"].test_metrics["test_f1"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_models_serve_answers_invocations(trained):
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            MODEL,
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        # mlflow execs `uvicorn` by name: the environment's bin directory must be on PATH even when it is not activated
        env=os.environ
        | {
            "MLFLOW_TRACKING_URI": trained["uri"],
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    why = server.stderr.read().decode()[-2000:] if server.poll() is not None else "timeout"
                    pytest.fail(f"server did not come up: {why}")
                time.sleep(1)
        body = json.dumps({"dataframe_records": [{"text": "Obama visits Paris"}, {"text": ""}]}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        predictions = answer["predictions"]
        assert len(predictions) == 2 and predictions[0]["error"] is None and predictions[1]["error"]
    finally:
        try:
            os.killpg(server.pid, 15)  # the whole group: mlflow's uvicorn child too
        except ProcessLookupError:  # a server that failed to start has already exited, with its group
            pass
        server.wait(timeout=30)
