"""Great Expectations validation: small synthetic datasets that pass, and the same ones broken so that a blocking
expectation fails (the CLI then exits 1); then the four real datasets, which must pass."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli import validate as validate_cli
from components.data.context_files import ContextReadResult
from components.data.records import ContextSet, ReadResult, Span
from components.datasets import DATASETS, SPLITS
from components.tasks.joint.records import JointExample, Triple
from components.tasks.ner.records import NerExample
from components.tasks.re.records import ReExample
from components.validation import log_data_docs, open_gx_workspace, render_report, validate_dataset, validate_examples


@pytest.fixture(scope="module")
def gx_workspace(gx_project):
    return open_gx_workspace(gx_project)


@pytest.fixture(scope="module")
def cli():
    app = typer.Typer()

    @app.callback()
    def main() -> None:  # a group, so that `validate` stays a subcommand as in `shapca`
        pass

    validate_cli.add_commands(app)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["validate", *map(str, args)])


def tweet(image_id: str, *pairs: str) -> str:
    return f"IMGID:{image_id}\n" + "".join(f"{p.split('/')[0]}\t{p.split('/')[1]}\n" for p in pairs) + "\n"


CLEAN = {
    "train": tweet("17_06_1", "Messi/B-PER", "scores/O") + tweet("17_06_2", "New/B-LOC", "York/I-LOC", "Knicks/B-ORG"),
    "dev": tweet("17_06_3", "Obama/B-PER", "speaks/O"),
    "test": tweet("O_4", "Emma/B-PER", "Watson/I-PER", "at/O", "Tribeca/B-MISC"),
}
FILES = {"train": "train.txt", "dev": "valid.txt", "test": "test.txt"}


def make_t17(root: Path, splits: dict[str, str] | None = None, contexts: str | None = None) -> Path:
    splits = {**CLEAN, **(splits or {})}
    (root / "twitter2017").mkdir(parents=True)
    for split, text in splits.items():
        (root / "twitter2017" / FILES[split]).write_text(text, encoding="utf-8")
    (root / "contexts/blip2").mkdir(parents=True)
    if contexts is None:
        contexts = "".join(f"{i}.jpg :a picture of {i}\n" for i in ["17_06_1", "17_06_2", "17_06_3", "O_4", "O_5"])
    (root / "contexts/blip2/twitter2017.txt").write_text(contexts, encoding="utf-8")
    return root


def failing(report) -> set[tuple[str, str]]:
    return {(r.split, r.check) for r in report.blocking_failures}


def test_clean_synthetic_dataset_passes_and_writes_gx_json(tmp_path, cli):
    data = make_t17(tmp_path / "data")
    out = tmp_path / "out" / "t17.json"
    result = cli("--dataset", "twitter2017", "--data-dir", data, "--any-sizes", "--output", out)
    assert result.exit_code == 0, result.output
    assert "twitter2017: PASSED" in result.output and f"GX result JSON: {out}" in result.output
    assert "PASS    train     tokens     tag in label set" in result.output
    payload = json.loads(out.read_text())
    assert payload["success"] is True and payload["statistics"]["splits"]["test"]["mentions"] == 2
    suites = {v["suite"] for v in payload["validations"]}
    assert "twitter2017.test.sentences-blip2" in suites and "twitter2017.train.mentions" in suites
    first = payload["validations"][0]["result"]["results"][0]
    assert first["expectation_config"]["type"] == "expect_table_row_count_to_equal"  # GX's own result objects


def test_leaked_example_fails_and_cli_exits_nonzero(tmp_path, cli, gx_workspace):
    leaked = CLEAN["test"] + tweet("17_06_2", "New/B-LOC", "York/I-LOC", "Knicks/B-ORG")  # a train tweet, its image too
    data = make_t17(tmp_path / "data", {"test": leaked})
    report = validate_dataset("twitter2017", data, check_published_sizes=False, gx_workspace=gx_workspace)
    assert failing(report) == {("test", "no leakage: (text, image) also in train")}
    (row,) = report.find("no leakage", "test")
    assert (row.unexpected_count, row.element_count, row.examples) == (1, 2, ["test-1"])

    result = cli("--dataset", "twitter2017", "--data-dir", data, "--any-sizes", "--output", tmp_path / "r.json")
    assert result.exit_code == 1
    expected = "FAIL test/sentences: no leakage: (text, image) also in train: 1 of 2 unexpected (50.00%) e.g. test-1"
    assert expected in result.output
    assert json.loads((tmp_path / "r.json").read_text())["success"] is False


def test_same_text_under_another_image_is_reported_not_blocking(tmp_path, gx_workspace):
    retweet = CLEAN["test"] + tweet("O_5", "Messi/B-PER", "scores/O")
    data = make_t17(tmp_path, {"test": retweet})
    report = validate_dataset("twitter2017", data, check_published_sizes=False, gx_workspace=gx_workspace)
    assert report.success
    (row,) = report.find("text also in train", "test")
    assert (row.success, row.blocking, row.status, row.unexpected_count) == (False, False, "WARN", 1)


def test_unknown_tag_in_a_file_is_a_reader_problem_with_its_line(tmp_path, cli):
    data = make_t17(tmp_path / "data", {"dev": CLEAN["dev"] + tweet("O_5", "Acme/B-OTHER")})
    result = cli("--dataset", "twitter2017", "--data-dir", data, "--any-sizes", "--output", tmp_path / "r.json")
    assert result.exit_code == 1
    path = data / "twitter2017/valid.txt"
    assert f"FAIL dev/problems: reader problems = 0: 1 e.g. {path}:6: unknown tag 'B-OTHER'" in result.output


def test_published_sizes_are_blocking(tmp_path, cli):
    data = make_t17(tmp_path / "data")
    result = cli("--dataset", "twitter2017", "--data-dir", data, "--output", tmp_path / "r.json")
    assert result.exit_code == 1
    assert "FAIL train/sentences: split size = published 3373 sentences: 2" in result.output


def test_missing_context_fails_coverage_for_blip2(tmp_path, gx_workspace):
    contexts = "17_06_1.jpg :x\n17_06_2.jpg :y\n17_06_3.jpg :z\n"  # O_4 (test) has none
    data = make_t17(tmp_path, contexts=contexts)
    report = validate_dataset("twitter2017", data, check_published_sizes=False, gx_workspace=gx_workspace)
    assert failing(report) == {("test", "context coverage >= 100%")}
    assert report.find("context coverage", "test")[0].observed == "0.00%"
    assert report.stats["splits"]["train"]["context_coverage"] == 1.0


def test_bio_error_rate_threshold(tmp_path, gx_workspace):
    noisy = tweet("17_06_1", "Messi/I-PER", "scores/O") + tweet("17_06_2", "New/B-LOC", "York/I-LOC", "Knicks/I-ORG")
    data = make_t17(tmp_path, {"train": noisy})
    report = validate_dataset("twitter2017", data, check_published_sizes=False, gx_workspace=gx_workspace)
    assert failing(report) == {("train", "BIO: mentions starting with I- <= 5%")}
    (row,) = report.find("BIO", "train")
    assert (row.unexpected_count, row.element_count) == (2, 3)
    assert report.stats["splits"]["train"]["i_starts"] == 2
    relaxed = validate_dataset(
        "twitter2017", data, max_bio_error_rate=0.7, check_published_sizes=False, gx_workspace=gx_workspace
    )
    assert relaxed.success and relaxed.find("BIO", "train")[0].unexpected_count == 2


def contexts_for(examples_by_split) -> ContextReadResult:
    ids = {e.image_id for examples in examples_by_split.values() for e in examples}
    return ContextReadResult(ContextSet("blip2", {i: "a picture" for i in ids}))


def test_gx_catches_records_that_bypass_the_reader(gx_workspace):
    """The suites do not rely on the reader: a tag outside the label set or mismatched lengths fail in GX."""
    splits = {
        "train": [NerExample("train-0", "1", ["Acme", "rises"], ["B-FOO", "O"])],
        "dev": [NerExample("dev-0", "2", ["a", "b"], ["O"])],
        "test": [NerExample("test-0", "3", ["Paris"], ["B-LOC"])],
    }
    report = validate_examples(
        DATASETS["twitter2017"],
        {s: ReadResult(x) for s, x in splits.items()},
        contexts_for(splits),
        check_published_sizes=False,
        gx_workspace=gx_workspace,
    )
    assert failing(report) == {("train", "tag in label set"), ("dev", "as many tags as tokens")}
    assert report.find("tag in label set", "train")[0].examples == ["train-0: 'B-FOO'"]
    assert "FAIL train/tokens: tag in label set: 1 of 2 unexpected (50.00%)" in render_report(report)


def test_mnre_span_relation_checks_and_informational_coverage(gx_workspace):
    tokens = ["Bill", "Cosby", "in", "LA"]
    good = ReExample("train-0", "twitter_1", tokens, Span(0, 2), Span(3, 4), "/per/loc/place_of_residence")
    splits = {
        "train": [good, ReExample("train-1", "twitter_1", tokens, Span(0, 2), Span(3, 7), "None")],
        "dev": [ReExample("dev-0", "twitter_2", tokens, Span(0, 2), Span(3, 4), "/per/per/friend")],
        "test": [ReExample("test-0", "twitter_3", tokens, Span(0, 2), Span(0, 2), "None")],
    }
    report = validate_examples(
        DATASETS["mnre"],
        {s: ReadResult(x) for s, x in splits.items()},
        ContextReadResult(ContextSet("blip2", {})),
        check_published_sizes=False,
        gx_workspace=gx_workspace,
    )
    assert failing(report) == {
        ("train", "tail span inside sentence"),
        ("dev", "relation in label set"),
        ("test", "head span != tail span"),
    }
    coverage = report.find("context coverage", "train")[0]
    assert (coverage.success, coverage.blocking, coverage.observed_value) == (False, False, 0.0)


def test_joint_triples_must_join_entities(gx_workspace):
    tokens = ["Paris", "is", "in", "France"]
    contain = Triple(Span(0, 1), "/loc/loc/contain", Span(3, 4))
    ok = JointExample("x-0", "a", tokens, [Span(0, 1), Span(3, 4)], [contain])
    bad = JointExample("x-1", "b", tokens, [Span(0, 1), Span(3, 4)], [Triple(Span(0, 1), "None", Span(2, 3))])
    splits = {"train": [ok], "dev": [bad], "test": [ok]}
    report = validate_examples(
        DATASETS["mnre-joint"],
        {s: ReadResult(x) for s, x in splits.items()},
        None,
        context_generator="none",
        check_published_sizes=False,
        gx_workspace=gx_workspace,
    )
    assert failing(report) == {
        ("dev", "relation in label set"),
        ("dev", "triple head and tail are entities"),
        ("test", "no leakage: (text, image) also in train"),
    }
    assert not report.find("context coverage")  # no contexts, nothing to cover


# ------------------------------------------------------------------------------------------------------ real data
@pytest.mark.parametrize("name", list(DATASETS))
def test_real_datasets_pass(data_dir, gx_workspace, tmp_path, name):
    report = validate_dataset(name, data_dir, result_path=tmp_path / f"{name}.json", gx_workspace=gx_workspace)
    assert report.success, render_report(report)
    sizes = {s: report.stats["splits"][s]["examples"] for s in SPLITS}
    assert sizes == DATASETS[name].sizes
    if name == "twitter2015":
        assert {s: report.stats["splits"][s]["i_starts"] for s in SPLITS} == {"train": 186, "dev": 53, "test": 135}
        assert report.find("BIO", "train")[0].observed == "186 of 6352 unexpected (2.93%)"
    if name.startswith("twitter"):
        assert all(r.success and r.blocking for r in report.find("context coverage"))
    else:
        assert all(not r.blocking for r in report.find("context coverage"))
    assert json.loads((tmp_path / f"{name}.json").read_text())["success"] is True


def test_cli_on_real_twitter2017_prints_its_statistics(data_dir, cli, tmp_path):
    result = cli("--dataset", "twitter2017", "--data-dir", data_dir, "--output", tmp_path / "t17.json")
    assert result.exit_code == 0, result.output
    assert "split size = published 3373 sentences" in result.output
    assert "mentions_by_type        LOC=731, MISC=701, ORG=1674, PER=2943" in result.output
    assert "twitter2017: PASSED" in result.output


def test_cli_rejects_bad_arguments(cli):
    assert cli().exit_code == 2
    assert cli("--dataset", "twitter2019").exit_code == 2
    assert cli("--dataset", "mnre", "--all").exit_code == 2


def _text(html_path: Path) -> str:
    """The visible text of a Data Docs page (tags, scripts and styles stripped)."""
    import html

    page = re.sub(r"<(script|style).*?</\1>", " ", html_path.read_text(encoding="utf-8"), flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_a_gx_checkpoint_builds_data_docs_for_the_real_twitter2017(data_dir, gx_workspace, gx_project, tmp_path):
    report = validate_dataset("twitter2017", data_dir, gx_workspace=gx_workspace)
    assert report.success
    # Every suite ran through its stored Checkpoint (with the Data Docs action), one per (split, frame).
    checkpoints = {p.stem for p in (gx_project / "checkpoints").glob("twitter2017.*.json")}
    assert checkpoints >= {"twitter2017.train.sentences-blip2", "twitter2017.test.mentions", "twitter2017.dev.tokens"}
    config = json.loads((gx_project / "checkpoints" / "twitter2017.train.tokens.json").read_text())
    assert config["actions"][0]["type"] == "update_data_docs"
    assert report.data_docs == gx_project / "uncommitted/data_docs/local_site/index.html"
    index = report.data_docs.read_text(encoding="utf-8")  # the index lists the results in a script-built table
    assert all(url.split("/local_site/", 1)[1] in index for url in report.data_docs_pages.values())
    # The result page of the train sentences: the suite's expectations, their verdicts and the observed values.
    page = Path(report.data_docs_pages["twitter2017.train.sentences-blip2"].removeprefix("file://"))
    text = _text(page)
    assert "Expectation Suite: twitter2017.train.sentences-blip2" in text and "Status: Succeeded" in text
    assert "Must have exactly 3373 rows. 3373" in text  # the published size, then the observed count
    assert "empty_tokens Status Expectation Observed Value values must belong to this set: 0 . 0% unexpected" in text
    assert "twitter2017-blip2" in text  # the run name groups this command's results
    tags_page = Path(report.data_docs_pages["twitter2017.train.tokens"].removeprefix("file://"))
    assert "B-PER I-PER B-LOC I-LOC B-ORG I-ORG B-MISC I-MISC" in _text(tags_page)
    assert f"Data Docs (open in a browser): {report.data_docs.resolve().as_uri()}" in render_report(report)

    # The same pages as an MLflow artifact of a validation run.
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    link = log_data_docs(report, tracking_uri=uri)
    client = MlflowClient(uri)
    logged = client.download_artifacts(link.run_id, "data_docs", str(tmp_path / "download"))
    assert (Path(logged) / "index.html").is_file()
    relative = page.relative_to(report.data_docs.parent)
    assert "Must have exactly 3373 rows. 3373" in _text(Path(logged) / relative)
    assert client.get_run(link.run_id).data.params["dataset"] == "twitter2017"
