"""A training run as MLflow records it, the registry step, and every consumer of the registered model.

One small real run (Twitter-2017 subset, BLIP-2 contexts, tiny random BERT) is shared by the tests of this module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

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


def test_evaluate_scores_a_registered_version_and_writes_nothing_to_the_context_cache(
    trained, data_dir, tmp_path, monkeypatch
):
    """Loaders read, publishers write: with the context cache read-only, evaluating scores what training scored."""
    from test_context_route import refuse_cache_writes, tree

    from components.config import DataConfig
    from components.runs.model_evaluation import evaluate_model_uri
    from components.training.data import publish_run_contexts

    monkeypatch.chdir(tmp_path)  # a context cache of this test's own, under ./.cache/contexts
    publish_run_contexts(
        DataConfig(dataset="twitter2017", data_dir=data_dir, max_examples=trained["cfg"].data.max_examples)
    )
    before = tree(tmp_path / ".cache")
    refuse_cache_writes(monkeypatch)
    metrics = evaluate_model_uri(MODEL, "twitter2017", "test", data_dir, limit=16)
    assert metrics["test_f1"] == pytest.approx(trained["result"].test_metrics["test_f1"])
    assert tree(tmp_path / ".cache") == before


def test_mlflow_models_serve_answers_invocations(trained, tmp_path):
    from components.serving.harness import invoke, start_serve

    server = start_serve(MODEL, trained["uri"], tmp_path / "serve.log", timeout=120)
    try:
        answer = invoke(server.url, [{"text": "Obama visits Paris"}, {"text": ""}], timeout=60)
        assert answer.status == 200, answer.body
        predictions = answer.json["predictions"]
        assert len(predictions) == 2 and predictions[0]["error"] is None and predictions[1]["error"]
    finally:
        server.stop()
