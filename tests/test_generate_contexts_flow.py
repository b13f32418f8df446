"""The generate-contexts Prefect flow, run in-process against Prefect's test harness (a temporary local server and
SQLite database under a temporary PREFECT_HOME), on the first real image ids of each Twitter-2017 split with the
precomputed backend; then the `shapca contexts` command on the same data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from components.contexts import read_context_set
from components.contexts.settings import ContextsConfig

LIMIT = 7  # examples per split


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    saved = {k: os.environ.get(k) for k in ("PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED", "PREFECT_API_URL")}
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"  # no telemetry attempts (there is no network)
    os.environ.pop("PREFECT_API_URL", None)
    from prefect.settings import PREFECT_HOME, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # Settings may already be loaded by another test module: override PREFECT_HOME in them too.
    with temporary_settings(updates={PREFECT_HOME: home}), prefect_test_harness(server_startup_timeout=60):
        yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_flow_publishes_the_set_and_a_markdown_artifact(prefect_server, data_dir: Path, tmp_path: Path):
    from prefect.artifacts import Artifact

    from flows.generate_contexts import generate_contexts_flow

    cfg = ContextsConfig(dataset="twitter2017", generator="mplug-owl", data_dir=data_dir, cache_dir=tmp_path / "cache")
    result = generate_contexts_flow(config=cfg, num_shards=3, limit_per_split=LIMIT)

    coverage = result["coverage"]
    assert {split: c["tweets"] for split, c in coverage.items()} == {"train": LIMIT, "dev": LIMIT, "test": LIMIT}
    run = result["run"]
    assert run["misses"] + run["failures"] == 3 * LIMIT and run["hits"] == 0
    contexts = read_context_set(result["path"])
    assert len(contexts.contexts) == run["misses"]
    assert contexts.content_hash() == result["content_hash"]
    covered = sum(c["with_context"] for c in coverage.values())
    assert covered == run["misses"]
    assert run["failures"] == 3 * LIMIT - covered  # uncovered images are failures with a reason
    manifest = json.loads(Path(result["manifest_path"]).read_text())
    assert all(f["reason"].startswith("not in source:") for f in manifest["failures"])

    artifact = Artifact.get("contexts-twitter2017-mplug-owl")
    assert artifact is not None and artifact.type == "markdown"
    markdown = artifact.data
    assert "# Contexts: twitter2017 / mplug-owl" in markdown
    assert result["content_hash"] in markdown
    for split, c in coverage.items():
        assert f"| {split} | {LIMIT} | {c['with_context']} | {c['coverage']:.2%} |" in markdown
    progress = Artifact.get("contexts-progress-twitter2017-mplug-owl")
    assert progress is not None and float(progress.data) == 100.0

    # Second run of the flow: every shard is all cache hits.
    again = generate_contexts_flow(config=cfg, num_shards=3, limit_per_split=LIMIT)
    assert again["run"]["misses"] == 0 and again["run"]["hits"] == run["misses"]
    assert again["content_hash"] == result["content_hash"]


def test_cli_imports_and_prints_coverage(data_dir: Path, tmp_path: Path):
    from cli.contexts import add_commands

    # An app of its own so that the test does not depend on which other commands the `shapca` app has.
    app = typer.Typer()
    app.callback()(lambda: None)
    add_commands(app)
    args = [
        "contexts",
        "--dataset",
        "twitter2017",
        "--generator",
        "blip2",
        "--data-dir",
        str(data_dir),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--no-progress",
    ]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "0 cache hits, 4819 generated" in first.output
    assert "train coverage 100.00%  (3373/3373 examples" in first.output
    set_path = tmp_path / "cache" / "sets" / "twitter2017-blip2.jsonl"
    assert f"context set: {set_path}" in first.output
    assert f"content hash: {read_context_set(set_path).content_hash()}" in first.output

    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "4819 cache hits, 0 generated, 0 reused, 0 failures" in second.output
    assert "(nothing to generate)" in second.output

    bad = CliRunner().invoke(app, ["contexts", "--backend", "hf", "--data-dir", str(data_dir)])
    assert bad.exit_code != 0 and "model path" in bad.output
