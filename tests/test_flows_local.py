"""The flows run in this process against a temporary Prefect server: validate-data on the real Twitter-2017 data
(artifact, result, cache), a failing validation on a tiny synthetic copy, `shapca run` end to end on a tiny config,
and the DVC check the flows start with."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from components.data.versioning import (
    DataVersionError,
    content_version,
    ensure_data_matches_pointer,
    fingerprint_directory,
    read_pointer,
)


@pytest.fixture(scope="module")
def prefect_backend(tmp_path_factory):
    """A temporary Prefect server and database, with task results persisted under tmp (never ~/.prefect)."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path_factory.mktemp("prefect-results")}):
        with prefect_test_harness(server_startup_timeout=90):
            yield


def _artifact_markdown(key: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert artifacts, f"no artifact {key!r}"
    return max(artifacts, key=lambda a: a.created).data


def _task_states(flow_run_id) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {re.sub(r"-[0-9a-f]{3}$", "", r.name): r.state.name for r in runs}


def test_validate_data_passes_on_real_twitter2017_publishes_report_and_caches(
    prefect_backend, project_root, data_dir, monkeypatch
):
    from flows.validate_data import validate_data

    monkeypatch.chdir(project_root)
    md5, _ = read_pointer(project_root / "data.dvc")

    state = validate_data(dataset="twitter2017", context_generator="blip2", return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["data_version"] == f"md5:{md5}"
    assert result["passed"] is True and result["data_pulled"] is False
    markdown = _artifact_markdown("validation-twitter2017")
    assert markdown.startswith("# Validation of twitter2017: PASSED")
    assert "tag in label set" in markdown and "3373" in markdown  # every expectation and the split statistics

    again = validate_data(dataset="twitter2017", context_generator="blip2", return_state=True)
    assert again.is_completed()
    states = _task_states(again.state_details.flow_run_id)
    assert states["validate-dataset"] == "Cached"  # same data version, same suites: not run again
    assert states["check-data-version"] == "Completed"  # the DVC check itself is never cached


def _write_conll(path: Path, tweets: list[tuple[str, list[tuple[str, str]]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for image_id, tokens in tweets:
        lines.append(f"IMGID:{image_id}")
        lines += [f"{token}\t{tag}" for token, tag in tokens]
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_validate_data_fails_with_the_readable_report_on_a_bad_tag(
    prefect_backend, tmp_path, monkeypatch, project_root
):
    from flows.validate_data import DataValidationFailed, validate_data

    monkeypatch.chdir(project_root)
    data = tmp_path / "data"
    _write_conll(
        data / "twitter2017" / "train.txt",
        [
            ("17_06_1", [("Trump", "B-PER"), ("visits", "O"), ("Paris", "B-LOC")]),
            ("17_06_2", [("Go", "O"), ("Warriors", "B-FOO")]),  # not one of PER LOC ORG MISC
        ],
    )
    _write_conll(data / "twitter2017" / "valid.txt", [("17_06_3", [("Apple", "B-ORG"), ("rocks", "O")])])
    _write_conll(data / "twitter2017" / "test.txt", [("17_06_4", [("Hi", "O"), ("London", "B-LOC")])])

    state = validate_data(
        dataset="twitter2017", context_generator="none", data_dir=data, check_published_sizes=False, return_state=True
    )
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, DataValidationFailed)
    report = str(error)
    assert "twitter2017: FAILED (1 blocking expectation(s) failed)" in report
    # The reader refuses the tag and says where: file, line, the tag and what was expected.
    assert re.search(r"FAIL train/problems: .*twitter2017/train\.txt:8: unknown tag 'B-FOO': expected one of", report)
    assert "B-FOO" in _artifact_markdown("validation-twitter2017")


def _real_subset(data_dir: Path, out: Path, tweets: int) -> tuple[Path, int]:
    """The first `tweets` tweets of each real Twitter-2017 split plus the BLIP-2 contexts; and the test split's
    number of gold mentions (B- tags)."""
    for name in ("train.txt", "valid.txt", "test.txt"):
        blocks = (data_dir / "twitter2017" / name).read_text(encoding="utf-8").split("\n\n")[:tweets]
        (out / "twitter2017").mkdir(parents=True, exist_ok=True)
        (out / "twitter2017" / name).write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
    (out / "contexts" / "blip2").mkdir(parents=True)
    shutil.copy(data_dir / "contexts" / "blip2" / "twitter2017.txt", out / "contexts" / "blip2")
    test = (out / "twitter2017" / "test.txt").read_text(encoding="utf-8")
    return out, sum(line.endswith("\tB-" + t) for line in test.splitlines() for t in ("PER", "LOC", "ORG", "MISC"))


def test_shapca_run_trains_registers_and_prints_the_outcome(
    prefect_backend, project_root, data_dir, tmp_path, monkeypatch
):
    from mlflow import MlflowClient
    from typer.testing import CliRunner

    from cli import app

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.chdir(tmp_path)  # `shapca run` finds the project itself (SHAPCA_PROJECT_ROOT)
    monkeypatch.setenv("SHAPCA_PROJECT_ROOT", str(project_root))
    overrides = [
        "train.device=cpu",
        "train.precision=fp32",
        "train.epochs=1",
        "train.batch_size=16",
        "model.permutations=8",
        "data.max_examples={train: 32, dev: 16, test: 16}",
        "tracking.allow_partial_dev=true",  # the capped dev split may promote (registry rule, issue 14)
        f"train.output_dir={tmp_path / 'outputs'}",
    ]
    result = CliRunner().invoke(app, ["run", *[arg for o in overrides for arg in ("-o", o)]])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"

    run_id = re.search(r"MLflow run id: ([0-9a-f]{32})", result.output).group(1)
    assert "alias decision: shapca-twitter2017 v1 -> champion (first version" in result.output
    # The overall row of the printed table: precision, recall, f1, support.
    printed_f1 = float(re.search(r"overall\s+[0-9.]+\s+[0-9.]+\s+([0-9.]+)\s+\d+", result.output).group(1))
    run = MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    assert run.data.metrics["test_f1"] == pytest.approx(printed_f1, abs=5e-5)
    assert run.data.params["data.test_size"] == "16"
    assert run.data.params["data.context_file"].endswith("twitter2017-blip2.jsonl")  # the published BLIP-2 set
    assert Path(run.data.params["train.output_dir"]).name.startswith("flow-run-")  # checkpoints per flow run

    # evaluate-model scores the registered champion again, from the registry, and logs an evaluation run.
    from flows.evaluate_model import evaluate_model

    subset, gold_mentions = _real_subset(data_dir, tmp_path / "subset", tweets=16)
    evaluation = evaluate_model(dataset="twitter2017", version="champion", split="test", data_dir=subset)
    assert evaluation["model_uri"] == "models:/shapca-twitter2017@champion"
    assert 0.0 <= evaluation["metrics"]["test_f1"] <= 1.0
    assert evaluation["metrics"]["test_support"] == gold_mentions
    client = MlflowClient(tracking_uri=tracking_uri)
    logged = client.search_runs([client.get_experiment_by_name("shapca-evaluations").experiment_id])
    assert [r.data.params["model_uri"] for r in logged] == ["models:/shapca-twitter2017@champion"]
    assert "test_f1" in _artifact_markdown("evaluation-twitter2017-test")


# ----------------------------------------------------------------------------------------------------------------
# The DVC check every flow starts with, on a throwaway DVC project that shares the real remote.


@pytest.fixture
def dvc_project(project_root, tmp_path) -> Path:
    from dvc.repo import Repo

    remote_url = Repo(str(project_root)).config["remote"]["shared"]["url"]  # resolved to an absolute path
    root = tmp_path / "project"
    root.mkdir()
    Repo.init(str(root), no_scm=True).close()
    (root / ".dvc" / "config").write_text(
        f"[core]\n    no_scm = True\n    remote = shared\n['remote \"shared\"']\n    url = {remote_url}\n"
    )
    shutil.copy(project_root / "data.dvc", root / "data.dvc")
    return root


def test_missing_data_is_pulled_then_found_clean(dvc_project, project_root):
    md5, _ = read_pointer(project_root / "data.dvc")

    first = ensure_data_matches_pointer(dvc_project)
    assert first.pulled and first.md5 == md5
    assert (dvc_project / "data" / "twitter2017" / "train.txt").is_file()
    second = ensure_data_matches_pointer(dvc_project)
    assert not second.pulled and second.md5 == md5
    assert content_version(dvc_project / "data", second) == f"md5:{md5}"
    # The same files elsewhere are versioned by content.
    assert fingerprint_directory(dvc_project / "data") == fingerprint_directory(project_root / "data")


def test_local_edits_are_an_error_unless_forced(dvc_project):
    ensure_data_matches_pointer(dvc_project)
    edited = dvc_project / "data" / "twitter2017" / "valid.txt"
    before = fingerprint_directory(dvc_project / "data")
    edited.write_text(edited.read_text() + "extra\tO\n")
    assert fingerprint_directory(dvc_project / "data") != before

    with pytest.raises(DataVersionError, match=r"(?s)data: modified.*valid\.txt.*dvc pull --force"):
        ensure_data_matches_pointer(dvc_project)
    assert "extra" in edited.read_text()  # nothing overwritten
    with pytest.raises(DataVersionError, match="run `dvc pull`"):
        ensure_data_matches_pointer(dvc_project, pull=False)

    restored = ensure_data_matches_pointer(dvc_project, force=True)
    assert restored.pulled and fingerprint_directory(dvc_project / "data") == before


def hold_dvc_lock(root: Path, seconds: float) -> subprocess.Popen:
    """Another process holding the repository's DVC lock (as `dvc push` does while it runs), from when this returns."""
    script = (
        "import sys, time\n"
        "from dvc.repo import Repo\n"
        "repo = Repo(sys.argv[1])\n"
        "with repo.lock:\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(float(sys.argv[2]))\n"
    )
    command = [sys.executable, "-c", script, str(root), str(seconds)]
    holder = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
    return holder


def test_the_check_waits_for_another_dvc_process_then_gives_up_with_a_clear_error(dvc_project):
    ensure_data_matches_pointer(dvc_project)  # pulled: the checks below only need the lock

    holder = hold_dvc_lock(dvc_project, seconds=6)
    started = time.monotonic()
    assert not ensure_data_matches_pointer(dvc_project, lock_wait_s=60).pulled
    assert time.monotonic() - started > 3  # it waited beyond DVC's own 3 s, for the holder's end
    assert holder.wait(timeout=30) == 0

    holder = hold_dvc_lock(dvc_project, seconds=30)
    try:
        with pytest.raises(DataVersionError, match=r"another DVC process held the repository's lock .* for over 1 s"):
            ensure_data_matches_pointer(dvc_project, lock_wait_s=1)
    finally:
        holder.kill()
        holder.wait()


def test_a_malformed_pointer_names_the_file_and_the_field(tmp_path):
    pointer = tmp_path / "data.dvc"
    pointer.write_text("outs:\n- path: data\n")
    with pytest.raises(DataVersionError, match=r"data\.dvc: 'outs\[\]\.md5' missing"):
        read_pointer(pointer)


# ----------------------------------------------------------------------------------------------------------------
# Which failures the tasks retry: only those another attempt can fix.


def _raised_from(outer: Exception, cause: Exception) -> Exception:
    try:
        try:
            raise cause
        except Exception as err:
            raise outer from err
    except Exception as chained:
        return chained


def test_only_transient_failures_are_retried():
    import botocore.exceptions as boto
    import requests
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2

    from flows.tasks import is_transient

    transient = [
        ConnectionRefusedError(111, "Connection refused"),
        requests.exceptions.ConnectionError("MLflow server unreachable"),
        MlflowException("slow down", error_code=databricks_pb2.REQUEST_LIMIT_EXCEEDED),
        boto.ClientError({"Error": {"Code": "SlowDown"}}, "GetObject"),
        # DVC pulling from an unreachable S3 endpoint, as ensure_data_matches_pointer reports it.
        _raised_from(DataVersionError("`dvc pull` failed"), boto.EndpointConnectionError(endpoint_url="http://s3")),
        MlflowException("(sqlite3.OperationalError) database is locked"),
    ]
    permanent = [
        ValueError("min_delta must be a finite number >= 0, got -1.0"),
        FileNotFoundError("data/twitter2017/train.txt"),
        MlflowException("no such model", error_code=databricks_pb2.RESOURCE_DOES_NOT_EXIST),
        boto.ClientError({"Error": {"Code": "AccessDenied"}}, "GetObject"),
        DataVersionError("data does not match data.dvc (data: modified)"),
    ]
    assert [is_transient(e) for e in transient] == [True] * len(transient)
    assert [is_transient(e) for e in permanent] == [False] * len(permanent)
