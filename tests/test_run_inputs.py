"""A training run's inputs, model metrics and model card, as MLflow records them (real sqlite store, real data).

Two small real runs on Twitter-2017: the first registered (LoggedModel, model card); the second reads fewer train
examples and a context set with one text changed, so exactly the train and context digests must change.
"""

from __future__ import annotations

import json
import os

import pytest
from mlflow import MlflowClient

from components.config import load_config
from components.contexts.context_set import write_context_set
from components.data.records import ContextSet
from components.datasets import load_split
from components.tracking.lineage import data_version
from components.tracking.model_card import logged_model_id
from components.tracking.registry import metric_tag, version_dev_metric
from components.tracking.run_inputs import DIGEST_CHARS, fetch_context_set, frame_digest, split_frame

NAME = "shapca-twitter2017"


def _config(root, tiny_bert_dir, data_dir, *extra):
    return load_config(
        "configs/default.yaml",
        [
            f"data.data_dir={data_dir}",
            f"model.text_encoder={tiny_bert_dir}",
            "model.align_dim=16",
            "model.permutations=8",
            "train.batch_size=8",
            f"train.output_dir={root / 'out'}",
            "tracking.experiment=inputs-test",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert_dir, data_dir):
    from components.runs.registration import register_and_promote
    from components.runs.training_run import train_and_log
    from components.training.data import load_training_data

    root = tmp_path_factory.mktemp("inputs")
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL")}
    os.environ["MLFLOW_TRACKING_URI"] = uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"] = "1"  # a short run still gets system metrics
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # not the registry an earlier test set globally
    try:
        cfg = _config(
            root,
            tiny_bert_dir,
            data_dir,
            "data.max_examples={train: 32, dev: 16, test: 16}",
            "train.epochs=2",
            "tracking.allow_partial_dev=true",
        )  # a capped dev split may promote here
        first = train_and_log(cfg)
        version, decision = register_and_promote(first, cfg)

        # The same dev/test data; 24 instead of 32 train examples; the first run's contexts with one text changed.
        contexts = fetch_context_set(client, _digest(client, first.run_id, "contexts"), root / "fetched")
        changed = dict(contexts.contexts)
        dev_image = next(
            e.image_id for e in load_split("twitter2017", "dev", data_dir, limit=16) if e.image_id in changed
        )  # an image both runs read
        changed[dev_image] = changed[dev_image] + " (edited)"
        context_file = root / "edited.jsonl"
        write_context_set(context_file, ContextSet("blip2-edited", changed), {})
        cfg2 = _config(
            root / "second",
            tiny_bert_dir,
            data_dir,
            "data.max_examples={train: 24, dev: 16, test: 16}",
            "train.epochs=1",
            f"data.context_file={context_file}",
            "tracking.log_model=false",
        )
        second = train_and_log(cfg2)
        # What the second run saw: the edited set, cut to the images of its examples.
        seen = load_training_data(cfg2.data).contexts
        yield {
            "seen": seen,
            "client": client,
            "first": first,
            "second": second,
            "version": version,
            "decision": decision,
            "contexts": contexts,
            "changed": changed,
        }
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _inputs(client, run_id):
    return {
        tags["mlflow.data.context"]: (item.dataset, tags)
        for item in client.get_run(run_id).inputs.dataset_inputs
        for tags in [{t.key: t.value for t in item.tags}]
    }


def _digest(client, run_id, context):
    return _inputs(client, run_id)[context][0].digest


def test_a_run_logs_its_splits_and_contexts_as_datasets_sourced_from_the_dvc_data(runs, project_root):
    inputs = _inputs(runs["client"], runs["first"].run_id)
    assert set(inputs) == {"training", "validation", "testing", "contexts"}
    train, _ = inputs["training"]
    assert train.name == "twitter2017-train" and train.source_type == "dvc" and len(train.digest) == DIGEST_CHARS
    source = json.loads(train.source)
    assert source == {"dvc_file": "data.dvc", "md5": data_version(project_root), "paths": ["twitter2017/train.txt"]}
    assert json.loads(train.profile)["num_rows"] == 32
    contexts, tags = inputs["contexts"]
    assert contexts.name == "twitter2017-contexts-blip2"
    assert tags["artifact"] == f"runs:/{runs['first'].run_id}/contexts/{contexts.digest}.jsonl"
    # Fetched back by digest (what another machine does), the set hashes to the digest the run logged.
    assert runs["contexts"].content_hash()[:DIGEST_CHARS] == contexts.digest
    assert len(runs["contexts"].contexts) > 0
    # The lineage params the datasets replace are gone; code and encoder lineage stay params.
    params = runs["client"].get_run(runs["first"].run_id).data.params
    assert not {"lineage.context_hash", "lineage.context_generator"} & set(params)
    assert params["lineage.data_version"] == source["md5"]  # kept: the registry compares versions on it
    assert any(k.startswith("lineage.encoder.text/") for k in params)


def test_digests_change_exactly_when_the_data_or_the_contexts_change(runs):
    client = runs["client"]
    first, second = _inputs(client, runs["first"].run_id), _inputs(client, runs["second"].run_id)
    assert first["training"][0].digest != second["training"][0].digest  # 24 train examples instead of 32
    assert first["validation"][0].digest == second["validation"][0].digest  # the same dev data
    assert first["testing"][0].digest == second["testing"][0].digest
    assert first["contexts"][0].digest != second["contexts"][0].digest  # one context text changed
    assert second["contexts"][0].source_type == "local"  # a context file the run was pointed at
    assert second["contexts"][0].digest == runs["seen"].content_hash()[:DIGEST_CHARS]
    assert runs["seen"].contexts.items() <= runs["changed"].items()


def test_split_digest_covers_every_row_and_label():
    from components.tasks.ner.records import NerExample

    rows = [NerExample(f"train-{i}", f"img{i}", ["Paris", "rocks"], ["B-LOC", "O"]) for i in range(12001)]
    base = frame_digest(split_frame("ner", rows))
    assert frame_digest(split_frame("ner", rows)) == base
    # MLflow's own pandas digest reads only the first 10,000 rows; ours changes with a label past them too.
    relabelled = rows[:-1] + [NerExample("train-12000", "img12000", ["Paris", "rocks"], ["B-PER", "O"])]
    assert frame_digest(split_frame("ner", relabelled)) != base


def test_the_logged_model_carries_the_best_dev_and_the_test_metrics(runs):
    client, first = runs["client"], runs["first"]
    mv = client.get_model_version(NAME, runs["version"])
    model = client.get_logged_model(logged_model_id(mv))
    metrics = {(m.key, m.dataset_name): m for m in model.metrics}
    run = client.get_run(first.run_id)
    dev_f1 = metrics[("dev_f1", "twitter2017-dev")]
    assert dev_f1.value == pytest.approx(run.data.metrics["best_dev_f1"]) == pytest.approx(first.dev_metric)
    assert dev_f1.step == int(run.data.metrics["best_epoch"])
    assert dev_f1.dataset_digest == _digest(client, first.run_id, "validation")
    test_f1 = metrics[("test_f1", "twitter2017-test")]
    assert test_f1.value == pytest.approx(first.test_metrics["test_f1"])
    assert test_f1.dataset_digest == _digest(client, first.run_id, "testing")
    # Linking did not add points to the run's per-epoch dev curve.
    assert [m.step for m in client.get_metric_history(first.run_id, "dev_f1")] == [1, 2]
    # Promotion reads the model's metric; no copy of it in a version tag.
    assert metric_tag("dev_f1") not in mv.tags
    assert version_dev_metric(client, NAME, runs["version"], "dev_f1") == pytest.approx(dev_f1.value)
    assert runs["decision"].dev_metric == pytest.approx(dev_f1.value)


def test_system_metrics_and_the_per_step_loss_curve(runs):
    client, run_id = runs["client"], runs["first"].run_id
    metrics = client.get_run(run_id).data.metrics
    assert "system/cpu_utilization_percentage" in metrics and "system/system_memory_usage_megabytes" in metrics
    steps = [m.step for m in client.get_metric_history(run_id, "train_step_loss")]
    # 32 examples in batches of 8: 4 optimizer steps per epoch, one point per step (a quarter epoch), 2 epochs.
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]
    assert all(m.value > 0 for m in client.get_metric_history(run_id, "train_step_loss"))


def test_the_model_card_is_on_the_registered_model_and_the_version(runs, project_root):
    client = runs["client"]
    mv = client.get_model_version(NAME, runs["version"])
    card = mv.description
    dev_f1 = version_dev_metric(client, NAME, runs["version"], "dev_f1")
    for expected in (
        "named entity recognition",
        "PER, LOC, ORG, MISC",
        data_version(project_root),
        "Context generator**: `blip2`",
        "text encoder `",
        f"| dev_f1 | {100 * dev_f1:.2f} |",
        f"| test_f1 | {100 * runs['first'].test_metrics['test_f1']:.2f} |",
        _digest(client, runs["first"].run_id, "contexts"),
        "2 epochs",
        "No images",
        "Decision**: champion",
        'docs/RESULTS.md, section "twitter2017 · contexts: blip2"',  # the study is linked ...
    ):
        assert expected in card, expected
    assert "rescaled cosines" not in card and "82.15" not in card  # ... not pasted
    registered = client.get_registered_model(NAME).description
    assert "**Champion**: v1." in registered and "models:/shapca-twitter2017@champion" in registered
    assert "No images" in registered and "Labels: PER, LOC, ORG, MISC" in registered


def test_the_version_card_compares_with_the_champion_it_was_decided_against():
    from components.tracking.model_card import CardFacts, version_card

    facts = CardFacts(
        model_name=NAME,
        version="3",
        run_id="r3",
        model_id="m-3",
        params={
            "data.dataset": "twitter2017",
            "data.context_generator": "mplug-owl",
            "model.image_encoder": "clip",
            "model.word_features": "chars+shape",
            "train.epochs": "6",
        },
        model_metrics={"dev_f1": 0.71, "test_f1": 0.70},
        run_metrics={"best_epoch": 5.0, "train_seconds": 600.0},
        datasets=[],
        alias="challenger",
        reason="dev_f1 0.71 does not beat champion v2 (0.73)",
        champion="2",
        champion_metrics={"dev_f1": 0.73, "test_f1": 0.72},
    )
    card = version_card(facts)
    assert "| metric | this version | champion v2 |" in card
    assert "| dev_f1 | 71.00 | 73.00 |" in card and "| test_f1 | 70.00 | 72.00 |" in card
    assert "**Decision**: challenger: dev_f1 0.71 does not beat champion v2" in card
    assert "6 epochs (best: 5), 600 s of training" in card
    assert "word features `chars+shape`" in card
    assert "No images" not in card and "Images through `clip`" in card  # the limit follows the config


def test_study_findings_are_linked_for_their_dataset_only(project_root, monkeypatch):
    """A card states its own run's facts: the study of docs/RESULTS.md is a link in a card of a dataset it measured
    (a section that exists), and absent from any other dataset's card."""
    from components.tracking.model_card import STUDY, STUDY_SECTIONS, CardFacts, registered_model_card, version_card

    headings = {line.removeprefix("## ") for line in (project_root / STUDY).read_text().splitlines()}
    assert set(STUDY_SECTIONS.values()) <= headings

    def cards(dataset: str, generator: str) -> str:
        params = {
            "data.dataset": dataset,
            "data.context_generator": generator,
            "lineage.git_commit": "0123456789abcdef",
        }
        facts = CardFacts(f"shapca-{dataset}", "1", "r1", "m-1", params, {"dev_f1": 0.5}, {}, [])
        return version_card(facts) + registered_model_card(facts, "1")

    twitter = cards("twitter2015", "blip2")
    assert f'{STUDY}, section "twitter2015 · contexts: blip2" at git `0123456789ab`' in twitter
    mnre = cards("mnre", "none")
    assert f'{STUDY}, section "mnre · contexts: none" at git' in mnre
    assert "Twitter" not in mnre and "UMT" not in mnre
    assert "Text only: no contexts were used (none are published for this dataset's images)." in mnre
    # A dataset the study has no section for gets no link.
    monkeypatch.delitem(STUDY_SECTIONS, "mnre-joint")
    joint = cards("mnre-joint", "none")
    assert STUDY not in joint and "Text only: no contexts were used" in joint
