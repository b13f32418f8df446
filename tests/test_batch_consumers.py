"""Registry consumers at scale (issue 25) with a tiny random Twitter-2017 model registered as
`models:/shapca-twitter2017@champion` in a sqlite registry: the whole real test split (723 rows) in ONE in-process
`predict` call with bounded memory, and the same split through `mlflow.pyfunc.spark_udf` on a local SparkSession,
row for row equal to the in-process predictions and scored to the micro-F1 `shapca evaluate` gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from components.config import DataConfig
from components.model.shapca import ShapCA
from components.model.shapca_config import ShapCAConfig
from components.serving.packaging import log_shapca_model
from components.tracking.mlflow_setup import setup_tracking
from components.tracking.registry import CHAMPION, registered_model_name
from components.training.data import load_training_data

MODEL_URI = f"models:/{registered_model_name('twitter2017')}@{CHAMPION}"
TEST_ROWS = 723  # data/twitter2017/test.txt


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tiny_bert_dir, data_dir):
    """A tiny model logged like a trained one and registered as shapca-twitter2017 v1 @champion; the tracking and
    registry URI point at its sqlite store for the module (and the Spark workers, which inherit the environment)."""
    root = tmp_path_factory.mktemp("batch-consumers")
    data = load_training_data(DataConfig(dataset="twitter2017", data_dir=data_dir, context_generator="blip2"))
    torch.manual_seed(0)
    config = ShapCAConfig(text_encoder=str(tiny_bert_dir), align_dim=16, permutations=4)
    ShapCA.from_config(config, "ner", data.labels).save_pretrained(root / "best")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_URI", uri)
    patch.setenv("MLFLOW_REGISTRY_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    setup = setup_tracking("batch-consumers-tests", tracking_uri=uri)
    with mlflow.start_run(experiment_id=setup.experiment_id):
        info = log_shapca_model(root / "best", "ner")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = registered_model_name("twitter2017")
    client.create_registered_model(name)
    version = client.create_model_version(name, info.model_uri, run_id=info.run_id)
    client.set_registered_model_alias(name, CHAMPION, version.version)
    try:
        yield {"root": root, "uri": uri, "data": data}
    finally:
        patch.undo()


def test_frame(data) -> pd.DataFrame:
    """The test split as a consumer sends it: the tokens and the image's context (what `shapca evaluate` reads)."""
    contexts = data.context_texts or {}
    examples = data.splits["test"]
    return pd.DataFrame({"text": [e.tokens for e in examples], "context": [contexts.get(e.image_id) for e in examples]})


test_frame.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


# In a subprocess, so that its memory is this call's alone: the model loaded from the registry, the test split read
# with the project's reader, a warm-up predict on the 32 longest rows (one full chunk at the split's longest padding:
# torch's and the allocator's one-time costs), then the whole split in one call. Before each call the kernel's peak
# RSS (VmHWM) is reset to the current RSS (`5 > /proc/self/clear_refs`), so each peak growth is that call's own.
RSS_PROBE = """
import json, sys
from pathlib import Path
import mlflow, pandas as pd
from components.config import DataConfig
from components.training.data import load_training_data

def mib(field):
    status = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024

def peak_growth(call):
    Path("/proc/self/clear_refs").write_text("5")
    before = mib("VmRSS")
    result = call()
    return result, mib("VmHWM") - before

data = load_training_data(DataConfig(dataset="twitter2017", data_dir=Path(sys.argv[2]), context_generator="blip2"))
contexts = data.context_texts or {}
examples = data.splits["test"]
frame = pd.DataFrame({"text": [e.tokens for e in examples], "context": [contexts.get(e.image_id) for e in examples]})
model = mlflow.pyfunc.load_model(sys.argv[1])
batch = int(sys.argv[3])
longest = frame.loc[frame["text"].map(len).sort_values(ascending=False).index[:batch]]
_, warm = peak_growth(lambda: model.predict(longest, params={"batch_size": batch}))
out, call = peak_growth(lambda: model.predict(frame, params={"batch_size": batch}))
print(json.dumps({"rows": len(out), "errors": sum(o["error"] is not None for o in out), "warm_mib": warm,
                  "call_mib": call, "rss_mib": mib("VmRSS")}))
"""


def _probe(uri: str, data_dir: Path, batch_size: int) -> dict:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": uri}
    probe = subprocess.run(
        [sys.executable, "-c", RSS_PROBE, MODEL_URI, str(data_dir), str(batch_size)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    return json.loads(probe.stdout.strip().splitlines()[-1])


def test_the_whole_test_split_in_one_predict_call_with_bounded_memory(registry, data_dir):
    """723 rows in one `predict` (the serving limit is 256 per HTTP request): all predicted, and the call's peak RSS
    grows by at most 48 MiB. The bound: a chunk of 32 rows at the split's longest padding was already held once in the
    warm-up, so what the call adds is its input copies and 723 output dicts (well under a MiB) plus allocator slack;
    one forward of all 723 rows at once would hold ~23 chunks' activations. Measured here with the default's character
    CNN: the 32-row warm-up grew the peak by 26-30 MiB (one-time costs included), a 256-row one by 142 MiB, this call
    by 16-20 MiB (3.5 MiB before the CNN, whose tensors take a new shape in every chunk; not investigated further)."""
    result = _probe(registry["uri"], data_dir, 32)
    print(f"peak RSS growth: warm-up chunk {result['warm_mib']:.1f} MiB, 723-row call {result['call_mib']:.1f} MiB")
    assert result["rows"] == TEST_ROWS and result["errors"] == 0, result
    assert result["call_mib"] <= 48, f"peak RSS grew by {result['call_mib']:.1f} MiB for {TEST_ROWS} rows: {result}"


# ---------------------------------------------------------------------------------------------------------------------
# Spark: what the README's "### Spark" shows, on a local SparkSession

# The struct each row's JSON answer is read into (`output="json"`: spark_udf converts a struct result row by row and
# cannot hold `truncated`'s nulls; from_json can).
PREDICTION_SCHEMA = (
    "entities array<struct<start:int,end:int,type:string,text:string,score:double>>, "
    "truncated struct<kept_words:int,dropped_words:int>, error string"
)


@pytest.fixture(scope="module")
def spark():
    """One local SparkSession for the module: one core, small memory, no UI; its Python workers run this venv."""
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[1]")
        .appName("shapca-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "1g")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    try:
        yield session
    finally:
        session.stop()


def _bio(entities: list[dict], n_tokens: int) -> list[str]:
    tags = ["O"] * n_tokens
    for e in entities:
        tags[e["start"] : e["end"]] = [f"B-{e['type']}"] + [f"I-{e['type']}"] * (e["end"] - e["start"] - 1)
    return tags


@pytest.mark.slow
@pytest.mark.timeout(480)  # setup and teardown included: about 2.5 minutes on this machine under load
def test_spark_udf_scores_the_test_split_as_in_process_and_as_shapca_evaluate(registry, spark, data_dir):
    from pyspark.sql.functions import col, from_json, struct
    from seqeval.metrics import f1_score

    from components.runs.model_evaluation import evaluate_model_uri

    data = registry["data"]
    frame = test_frame(data)
    in_process = mlflow.pyfunc.load_model(MODEL_URI).predict(frame)

    # The README's lines, verbatim but for the input.
    predict = mlflow.pyfunc.spark_udf(
        spark, MODEL_URI, result_type="string", env_manager="local", params={"output": "json"}
    )
    tweets = spark.createDataFrame(frame.assign(id=range(len(frame))))
    scored = tweets.withColumn("answer", predict(struct("text", "context")))
    scored = scored.withColumn("prediction", from_json(col("answer"), PREDICTION_SCHEMA)).cache()  # scored once
    rows = scored.select("id", "answer", "prediction").orderBy("id").collect()

    # Row for row: the same entities (spans, types, texts), truncation and errors; the same scores up to float
    # summation order (Spark runs its Python worker with OMP_NUM_THREADS=spark.task.cpus=1, this process with 2, and
    # torch's reductions then add in another order: ~1e-6 apart on a few rows).
    answers = [json.loads(r["answer"]) for r in rows]
    parsed = [r["prediction"].asDict(recursive=True) for r in rows]
    assert len(answers) == len(parsed) == len(in_process) == TEST_ROWS
    for i, (answer, row, expected) in enumerate(zip(answers, parsed, in_process, strict=True)):
        assert answer.keys() == expected.keys() and row["error"] is None is expected["error"], i
        assert row["truncated"] == answer["truncated"] == expected["truncated"], i
        spans = [{k: e[k] for k in ("start", "end", "type", "text")} for e in expected["entities"]]
        for got in (answer["entities"], row["entities"]):
            assert [{k: e[k] for k in ("start", "end", "type", "text")} for e in got] == spans, i
            assert [e["score"] for e in got] == pytest.approx([e["score"] for e in expected["entities"]], abs=1e-5)
    assert sum(len(p["entities"]) for p in parsed) > 0  # the tiny model does tag something
    # The struct is queryable in Spark itself: entities per type, counted by Spark.
    types = scored.selectExpr("explode(prediction.entities) AS e").groupBy("e.type").count().collect()
    assert sum(t["count"] for t in types) == sum(len(p["entities"]) for p in parsed)

    gold = [e.tags for e in data.splits["test"]]
    predicted = [_bio(p["entities"], len(e.tokens)) for p, e in zip(parsed, data.splits["test"], strict=True)]
    evaluated = evaluate_model_uri(MODEL_URI, "twitter2017", "test", data_dir, "blip2")
    assert f1_score(gold, predicted) == pytest.approx(evaluated["test_f1"], abs=1e-12)
