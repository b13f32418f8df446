"""The ablation grid on a real Twitter-2017 subset with real BLIP-2 contexts and a tiny random BERT: MLflow runs and
their tags, skipping finished points, resuming an interrupted one, and the rendered results table."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from cli import app
from components.config import config_hash, config_identity, load_config
from components.experiments.ablation import grid as grid_module
from components.experiments.ablation.collect import collect_ablation_runs
from components.experiments.ablation.grid import run_ablation
from components.experiments.ablation.lookup import find_finished_run
from components.experiments.ablation.report import GENERATED_MARKER, render_results_markdown
from components.experiments.ablation.summary import summarize_runs
from components.experiments.ablation.variants import VARIANTS, parse_variants, point_config
from components.tracking.lineage import git_commit
from components.tracking.mlflow_setup import setup_tracking
from components.tracking.run_logging import start_run

EXPERIMENT = "ablation-test"
LOADED_COMMIT = "c0de" * 10


class Interrupted(Exception):
    pass


def _base(tmp_path, tiny_bert_dir, data_dir, *extra):
    return load_config(
        "configs/default.yaml",
        [
            f"data.data_dir={data_dir}",
            "data.max_examples={train: 32, dev: 16, test: 16}",
            f"model.text_encoder={tiny_bert_dir}",
            "model.align_dim=16",
            "model.permutations=8",
            "train.batch_size=16",
            "train.device=cpu",
            "train.lr_encoder=1e-3",
            f"train.output_dir={tmp_path / 'outputs'}",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def grid(tmp_path_factory, tiny_bert_dir, data_dir):
    """Variant 1 alone (an interrupted grid), then variants 1 and 5 (the rerun), then the same again."""
    tmp_path = tmp_path_factory.mktemp("ablation")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        base = _base(tmp_path, tiny_bert_dir, data_dir)
        first = run_ablation("twitter2017", 1, base, epochs=1, variants=parse_variants("1"), experiment=EXPERIMENT)
        # The second grid process started on an older commit than the HEAD its run starts at (a commit landed
        # between): its run is tagged with the code the process runs.
        heads = iter([LOADED_COMMIT])
        with pytest.MonkeyPatch.context() as moved:
            moved.setattr(grid_module, "git_commit", lambda root: next(heads, git_commit(root)))
            second = run_ablation(
                "twitter2017", 1, base, epochs=1, variants=parse_variants("1,shapca"), experiment=EXPERIMENT
            )
        third = run_ablation("twitter2017", 1, base, epochs=1, variants=parse_variants("text,5"), experiment=EXPERIMENT)
        setup = setup_tracking(EXPERIMENT)
        client = MlflowClient(setup.tracking_uri)
        runs = client.search_runs([setup.experiment_id])
        collected = collect_ablation_runs(EXPERIMENT)
        yield {
            "base": base,
            "first": first,
            "second": second,
            "third": third,
            "runs": runs,
            "collected": collected,
            "setup": setup,
            "tmp_path": tmp_path,
            "uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        }


def test_each_point_is_one_tagged_finished_run(grid):
    runs = {r.info.run_id: r for r in grid["runs"]}
    assert len(runs) == 2  # three invocations, two distinct points: nothing trained twice
    assert all(r.info.status == "FINISHED" for r in runs.values())
    by_variant = {r.data.tags["ablation.variant"]: r for r in runs.values()}
    assert set(by_variant) == {"text", "shapca"}
    for key, run in by_variant.items():
        cfg = point_config(grid["base"], VARIANTS[key], 13, dataset="twitter2017", epochs=1)
        assert run.data.tags["ablation.group"] == "twitter2017/blip2"
        assert run.data.tags["ablation.seed"] == "13"
        assert run.data.tags["ablation.config_hash"] == config_hash(cfg)
        assert run.data.params["tracking.register_model"] == "False"
        assert run.data.params["train.epochs"] == "1"
        assert "test_f1" in run.data.metrics and "best_dev_f1" in run.data.metrics
    # The code each run executed: HEAD at its process's start (the shapca point's process started on another commit
    # than the HEAD its run's lineage records); the report reads the tag.
    assert by_variant["text"].data.tags["ablation.code_commit"] == by_variant["text"].data.params["lineage.git_commit"]
    assert by_variant["shapca"].data.tags["ablation.code_commit"] == LOADED_COMMIT
    assert by_variant["shapca"].data.params["lineage.git_commit"] != LOADED_COMMIT
    collected = {r.variant: r for r in grid["collected"]}
    assert collected["shapca"].commit == LOADED_COMMIT
    assert collected["text"].commit == by_variant["text"].data.params["lineage.git_commit"]
    assert by_variant["text"].data.params["model.context_mode"] == "none"
    assert by_variant["text"].data.params["model.alignment"] == "none"
    assert by_variant["shapca"].data.params["model.context_mode"] == "fusion"
    assert by_variant["shapca"].data.params["model.alignment"] == "shapley"
    # The logged model stays in MLflow; the point's checkpoints are removed, its run id file kept.
    out = grid["tmp_path"] / "outputs" / "ablation" / "twitter2017-blip2" / "text" / "seed13"
    assert (out / "mlflow_run_id").read_text().strip() == by_variant["text"].info.run_id
    assert not (out / "checkpoints").exists()


def test_a_rerun_skips_finished_points_and_trains_only_the_missing_ones(grid):
    first, second, third = grid["first"], grid["second"], grid["third"]
    assert [r.action for r in first] == ["trained"]
    assert [(r.variant, r.action) for r in second] == [("text", "skipped"), ("shapca", "trained")]
    assert second[0].run_id == first[0].run_id
    assert second[0].test_f1 == pytest.approx(first[0].test_f1)
    assert [(r.variant, r.action) for r in third] == [("text", "skipped"), ("shapca", "skipped")]
    assert [r.run_id for r in third] == [r.run_id for r in second]


def test_failed_runs_and_other_configs_do_not_count_as_finished(grid, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", grid["uri"])
    setup = setup_tracking(EXPERIMENT)
    client = MlflowClient(setup.tracking_uri)
    text = point_config(grid["base"], VARIANTS["text"], 13, dataset="twitter2017", epochs=1)
    assert find_finished_run(client, setup.experiment_id, text).info.run_id == grid["first"][0].run_id
    # The same point with more epochs, or another seed, is another config.
    longer = point_config(grid["base"], VARIANTS["text"], 13, dataset="twitter2017", epochs=2)
    assert find_finished_run(client, setup.experiment_id, longer) is None
    other_seed = point_config(grid["base"], VARIANTS["text"], 14, dataset="twitter2017", epochs=1)
    assert find_finished_run(client, setup.experiment_id, other_seed) is None
    # A FAILED run with exactly this config's params is not a result.
    fusion = point_config(grid["base"], VARIANTS["fusion"], 13, dataset="twitter2017", epochs=1)
    with pytest.raises(RuntimeError), start_run(setup, run_name="crashed") as run:
        run.log_params(fusion.flat())
        raise RuntimeError("died")
    assert client.get_run(run.run_id).info.status == "FAILED"
    assert find_finished_run(client, setup.experiment_id, fusion) is None


def test_summary_and_rendered_table_come_from_the_mlflow_runs(grid, monkeypatch):
    collected = grid["collected"]
    summaries = summarize_runs(collected)
    assert [(s.group, s.number, s.variant) for s in summaries] == [
        ("twitter2017/blip2", 1, "text"),
        ("twitter2017/blip2", 5, "shapca"),
    ]
    metrics = {r.data.tags["ablation.variant"]: r.data.metrics for r in grid["runs"]}
    for s in summaries:
        assert s.seeds == [13] and len(s.run_ids) == 1
        assert s.test_f1.mean == pytest.approx(metrics[s.variant]["test_f1"])
        assert s.test_f1.std is None and s.test_f1.n == 1  # one seed: no spread to report
        assert s.dev_f1.mean == pytest.approx(metrics[s.variant]["best_dev_f1"])
        assert set(s.per_type_f1) == {"PER", "LOC", "ORG", "MISC"}
        assert s.per_type_f1["PER"].mean == pytest.approx(metrics[s.variant]["test_PER_f1"])
        assert s.epochs_run.mean == 1 and s.best_epoch.mean == 1
        assert s.wall_seconds.mean > 0
        assert len(s.commits) == 1

    baseline = {k: v for k, v in config_identity(load_config("configs/default.yaml")).items() if k != "train.seed"}
    text = render_results_markdown(
        summaries,
        collected,
        experiment=EXPERIMENT,
        tracking_uri=grid["uri"],
        command="shapca experiment report",
        baseline=baseline,
    )
    section = text.split("## twitter2017 · contexts: blip2")[1].split("## Runs")[0]
    text_row = next(line for line in section.splitlines() if line.startswith("| 1 | text only"))
    assert f"| {100 * metrics['text']['test_f1']:.2f} |" in text_row
    assert f"| {100 * metrics['text']['best_dev_f1']:.2f} |" in text_row
    assert "| ref | UMT peer (BERT-base + ResNet-152 on the real images)" in section and "| 85.09 |" in section
    assert "73.20" not in text  # the Twitter-2015 reference only beside Twitter-2015 results
    assert "| # | variant | setting | LOC | MISC | ORG | PER |" in section
    assert "`train.epochs=1`" in text_row  # what the setting changes beyond its group and variant
    assert "model.context_mode" not in text_row  # the variant says that already
    shapca = next(s for s in summaries if s.variant == "shapca")
    text_only = next(s for s in summaries if s.variant == "text")
    assert text_only.probe == {}  # no contexts, nothing to probe
    assert shapca.probe["shapley_top1"].mean == pytest.approx(metrics["shapca"]["dev_probe_shapley_top1"])
    *_, probe_row = (line for line in section.splitlines() if line.startswith("| 5 | shapca | [`"))  # the last table
    assert f"| {100 * metrics['shapca']['dev_probe_cosine_top1']:.1f} |" in probe_row
    assert f"| {metrics['shapca']['dev_probe_context_gate']:.3f} |" in probe_row
    for run in grid["runs"]:
        assert f"`{run.info.run_id}`" in text.split("## Runs")[1]
    configs = text.split("## Configs")[1]
    assert "`model.context_mode=none`" in configs and "`train.epochs=1`" in configs
    assert "`model.context_trainable_layers=1`" not in configs  # the default: not a difference

    # The command renders the same from the store.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", grid["uri"])
    output = grid["tmp_path"] / "RESULTS.md"
    done = CliRunner().invoke(app, ["experiment", "report", "--experiment", EXPERIMENT, "--output", str(output)])
    assert done.exit_code == 0, done.output
    assert "2 settings from 2 runs" in done.output
    assert text_row in output.read_text()

    # Written again over a document with a hand-written summary above the marker: the summary stays word for word,
    # the old tables go, the new ones come once (and the title once).
    summary = f"# Results\n\n## Summary\n\nWritten by hand from the tables.\n\n{GENERATED_MARKER}\n"
    output.write_text(summary + "\n| 1 | text only | stale row |\n", encoding="utf-8")
    done = CliRunner().invoke(app, ["experiment", "report", "--experiment", EXPERIMENT, "--output", str(output)])
    assert done.exit_code == 0, done.output
    rewritten = output.read_text()
    assert rewritten.startswith(summary) and "stale row" not in rewritten
    assert rewritten.count(text_row) == 1 and rewritten.count("# Results\n") == 1
    # Without the marker the file is the report alone, as before.
    output.write_text("# Results\n\nno marker here\n", encoding="utf-8")
    assert (
        CliRunner().invoke(app, ["experiment", "report", "--experiment", EXPERIMENT, "--output", str(output)]).exit_code
        == 0
    )
    assert "no marker here" not in output.read_text() and text_row in output.read_text()


def test_an_interrupted_point_resumes_its_run_from_the_checkpoint(tmp_path, tiny_bert_dir, data_dir, monkeypatch):
    from components.training.data import load_training_data
    from components.training.trainer import fit

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    base = _base(tmp_path, tiny_bert_dir, data_dir, "train.patience=5")
    tracked = base.model_copy(update={"tracking": base.tracking.model_copy(update={"experiment": EXPERIMENT})})
    cfg = point_config(tracked, VARIANTS["text"], 13, dataset="twitter2017", epochs=2)
    # What a training killed after its first epoch leaves: a FAILED run with the config's params, the run id in the
    # output directory, and the epoch-1 checkpoint.
    setup = setup_tracking(EXPERIMENT)
    out = cfg.train.output_dir
    out.mkdir(parents=True)

    def die_after_epoch_one(epoch, metrics):
        raise Interrupted

    with pytest.raises(Interrupted), start_run(setup, run_name="interrupted") as run:
        (out / "mlflow_run_id").write_text(run.run_id)
        run.log_params(cfg.flat())
        fit(cfg, load_training_data(cfg.data), on_epoch_end=die_after_epoch_one)
    client = MlflowClient(setup.tracking_uri)
    assert client.get_run(run.run_id).info.status in ("FAILED", "KILLED")

    rows = run_ablation("twitter2017", 1, base, epochs=2, variants=[VARIANTS["text"]], experiment=EXPERIMENT)
    assert [(r.action, r.run_id) for r in rows] == [("resumed", run.run_id)]
    resumed = client.get_run(run.run_id)
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["ablation.resumed"] == "true"
    assert [m.step for m in client.get_metric_history(run.run_id, "dev_f1")] == [2]  # epoch 1 was not redone
    [point] = collect_ablation_runs(EXPERIMENT)
    assert point.resumed and point.epochs_run == 2  # from the run's history, which includes the epoch before
    assert len(client.search_runs([setup.experiment_id])) == 1


def test_grid_arguments_are_checked():
    assert [v.key for v in parse_variants("1,shapca,2,1")] == ["text", "shapca", "concat"]
    with pytest.raises(ValueError, match="unknown ablation variant '10'"):
        parse_variants("1,10")
    base = load_config("configs/default.yaml")
    with pytest.raises(ValueError, match="model.alignment is what the ablation variants set"):
        point_config(base, VARIANTS["text"], 1, overrides=["model.alignment=none"])
    with pytest.raises(ValueError, match="data.context_file"):
        point_config(base, VARIANTS["shapca"], 1, dataset="mnre")
    cfg = point_config(base, VARIANTS["text"], 1, dataset="mnre")
    assert cfg.data.dataset == "mnre" and cfg.model.context_mode == "none"
    mplug = point_config(
        base, VARIANTS["concat"], 2, generator="mplug-owl", epochs=5, overrides=["model.permutations=16"]
    )
    assert (mplug.data.context_generator, mplug.train.epochs, mplug.train.seed) == ("mplug-owl", 5, 2)
    assert mplug.model.permutations == 16 and mplug.model.context_mode == "concat"
    assert mplug.train.output_dir.parts[-3:] == ("twitter2017-mplug-owl", "concat", "seed2")
    assert config_hash(mplug) != config_hash(
        point_config(base, VARIANTS["concat"], 3, generator="mplug-owl", epochs=5, overrides=["model.permutations=16"])
    )
    assert config_hash(mplug, include_seed=False) == config_hash(
        point_config(base, VARIANTS["concat"], 3, generator="mplug-owl", epochs=5, overrides=["model.permutations=16"]),
        include_seed=False,
    )


def test_each_shapley_variant_names_its_game_whatever_the_base_says():
    from components.experiments.ablation.variants import default_variants

    coverage_base = load_config(
        "configs/default.yaml", ["model.shapley_game=token_coverage", "model.coverage_scores=maxsim"]
    )
    games = {key: point_config(coverage_base, VARIANTS[key], 1).model for key in ("shapca", "coverage", "maxsim")}
    assert (games["shapca"].shapley_game, games["shapca"].alignment) == ("cosine_of_sum", "shapley")
    assert (games["coverage"].shapley_game, games["coverage"].coverage_scores) == ("token_coverage", "pooled")
    assert (games["maxsim"].shapley_game, games["maxsim"].coverage_scores) == ("token_coverage", "maxsim")
    with pytest.raises(ValueError, match="model.shapley_game is what the ablation variants set"):
        point_config(coverage_base, VARIANTS["text"], 1, overrides=["model.shapley_game=cosine_of_sum"])
    # text only on top of a default that freezes the context encoder below its top layer: k is moot there
    assert point_config(load_config("configs/default.yaml"), VARIANTS["text"], 1).model.context_mode == "none"
    assert [v.key for v in default_variants("twitter2015", "blip2")] == [
        "text",
        "infonce",
        "shapca",
        "coverage",
        "maxsim",
    ]
    assert len(default_variants("twitter2017", "blip2")) == 7


def test_a_runs_identity_is_read_back_from_its_params_without_the_measured_ones():
    from components.config import config_identity, identity_from_params, identity_hash, load_config

    cfg = load_config("configs/default.yaml", ["model.image_encoder=/some/vit"])
    identity = config_identity(cfg)
    measured = {
        "data.train_size": "3373",
        "data.dev_image_coverage": "0.93",
        "data.test_context_coverage": "1.0",
        "lineage.git_commit": "abc",
        "train_seconds": "12",
    }
    assert identity_from_params({**identity, **measured}) == identity
    assert identity_hash(identity_from_params({**identity, **measured})) == identity_hash(identity)


def test_the_gate_variants_and_case_features_are_settings_the_report_tells_apart():
    """Variants 8 and 9 set the context gate's options on top of variant 4 and run only when named; case features
    are a base override, so with and without they are two settings of one variant, each row saying which it is."""
    from components.experiments.ablation.summary import Stat, VariantSummary
    from components.experiments.ablation.variants import default_variants

    base = load_config("configs/default.yaml")
    floor = point_config(base, VARIANTS["gatefloor"], 13).model
    assert (floor.alignment, floor.context_gate_floor, floor.context_gate_bias) == ("infonce", 0.25, None)
    opened = point_config(base, VARIANTS["gateopen"], 13)
    assert (opened.model.context_gate_bias, opened.train.lr_fusion) == (2.0, 1e-3)
    assert [v.number for v in default_variants("twitter2017", "blip2")] == [1, 2, 3, 4, 5, 6, 7]
    with pytest.raises(ValueError, match="model.context_gate_floor is what the ablation variants set"):
        point_config(base, VARIANTS["infonce"], 13, overrides=["model.context_gate_floor=0.1"])

    plain = point_config(base, VARIANTS["infonce"], 13, overrides=["model.word_features=none"])
    chars = point_config(base, VARIANTS["infonce"], 13)  # the default's case features
    assert chars.model.word_features == "chars"
    assert config_hash(chars, include_seed=False) != config_hash(plain, include_seed=False)
    baseline = {k: v for k, v in config_identity(base).items() if k != "train.seed"}

    def summary(cfg) -> VariantSummary:
        one = Stat(0.8, None, 1)
        return VariantSummary(
            group="twitter2017/blip2",
            variant="infonce",
            number=4,
            label=VARIANTS["infonce"].label,
            setting_hash=config_hash(cfg, include_seed=False),
            seeds=[13],
            run_ids=[f"run-{cfg.model.word_features}"],
            test_f1=one,
            dev_f1=one,
            per_type_f1={"PER": one},
            best_epoch=Stat(3, None, 1),
            epochs_run=Stat(3, None, 1),
            wall_seconds=Stat(400, None, 1),
            commits=["abc"],
            dirty=False,
            resumed=False,
            identity={k: v for k, v in config_identity(cfg).items() if k != "train.seed"},
            probe={"context_gate": Stat(0.01, None, 1)},
        )

    text = render_results_markdown(
        [summary(plain), summary(chars)], [], experiment="x", tracking_uri="sqlite://", command="c", baseline=baseline
    )
    section = text.split("## twitter2017 · contexts: blip2")[1].split("## Runs")[0]
    rows = [line for line in section.splitlines() if line.startswith("| 4 ")]
    assert len(rows) == 6  # main table, per-type table, probe table: one row per setting each
    labelled = [row for row in rows if "`model.word_features=none`" in row]
    assert len(labelled) == 3 and all(config_hash(plain, include_seed=False)[:8] in row for row in labelled)
