"""Crash-safe training outputs: atomic swaps of best/ and last/, recovery of an interrupted swap, and what `--resume`
may do with the run named in an output directory (real MLflow sqlite store, real checkpoints of a small module)."""

from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient

from components.config import ExperimentConfig, config_hash
from components.runs.run_dir import RUN_ID_FILE, ResumeRefused, claim_output_dir, mark_interrupted, run_to_continue
from components.tracking.mlflow_setup import setup_tracking
from components.tracking.run_logging import start_run
from components.training.checkpoint import (
    TrainerState,
    has_checkpoint,
    recover_swap,
    save_checkpoint,
    write_atomically,
)


def _checkpoint(directory, config_hash_: str) -> None:
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    save_checkpoint(directory, model, optimizer, scheduler, TrainerState(config_hash=config_hash_, epoch=1))


def test_a_failed_write_leaves_the_previous_version_whole(tmp_path):
    write_atomically(tmp_path / "best", lambda d: (d / "weights").write_text("v1"))

    def dies_halfway(directory):
        (directory / "weights").write_text("v2 half")
        raise KeyboardInterrupt  # the process is killed while writing

    with pytest.raises(KeyboardInterrupt):
        write_atomically(tmp_path / "best", dies_halfway)
    assert (tmp_path / "best" / "weights").read_text() == "v1"
    write_atomically(tmp_path / "best", lambda d: (d / "weights").write_text("v3"))  # the leftover tmp is cleared
    assert (tmp_path / "best" / "weights").read_text() == "v3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_an_interrupted_swap_is_found_and_restored(tmp_path, caplog):
    _checkpoint(tmp_path, "abc")
    (tmp_path / "last").rename(tmp_path / "last.old")  # killed between `last -> last.old` and `last.tmp -> last`
    with caplog.at_level("WARNING", logger="components.training.checkpoint"):
        assert has_checkpoint(tmp_path)
    assert (tmp_path / "last" / "trainer_state.pt").is_file() and not (tmp_path / "last.old").exists()
    assert "a swap was interrupted" in caplog.text
    (tmp_path / "last.old").mkdir()  # killed after the swap, before the cleanup: the new version stays
    recover_swap(tmp_path / "last")
    assert not (tmp_path / "last.old").exists() and has_checkpoint(tmp_path)


@pytest.fixture()
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    setup = setup_tracking("crash-safety", tracking_uri=uri)
    return MlflowClient(uri), setup.experiment_id


def _previous_run(client, experiment_id, out_dir, status):
    run = client.create_run(experiment_id)
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status=status)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RUN_ID_FILE).write_text(run.info.run_id)
    return run.info.run_id


def test_resume_refuses_a_finished_run_and_leaves_its_status(store, tmp_path):
    client, experiment = store
    run_id = _previous_run(client, experiment, tmp_path / "out", "FINISHED")
    with pytest.raises(ResumeRefused, match=f"run {run_id} .* already FINISHED"):
        run_to_continue(client, ExperimentConfig(), tmp_path / "out", resume=True)
    assert client.get_run(run_id).info.status == "FINISHED"


def test_resume_refuses_another_config_before_touching_any_run(store, tmp_path):
    client, experiment = store
    run_id = _previous_run(client, experiment, tmp_path / "out", "KILLED")
    _checkpoint(tmp_path / "out" / "checkpoints", "0123456789abcdef")
    with pytest.raises(ResumeRefused, match="written by another config .*hash 0123456789abcdef"):
        run_to_continue(client, ExperimentConfig(), tmp_path / "out", resume=True)
    assert client.get_run(run_id).info.status == "KILLED"


@pytest.mark.parametrize("status", ["RUNNING", "FAILED", "KILLED"])
def test_resume_continues_an_interrupted_run_of_the_same_config(store, tmp_path, status):
    client, experiment = store
    run_id = _previous_run(client, experiment, tmp_path / "out", status)
    _checkpoint(tmp_path / "out" / "checkpoints", config_hash(ExperimentConfig()))
    assert run_to_continue(client, ExperimentConfig(), tmp_path / "out", resume=True) == run_id


def test_a_killed_run_left_running_is_marked_killed_when_its_directory_is_reused(store, tmp_path, caplog):
    client, experiment = store
    run_id = _previous_run(client, experiment, tmp_path / "out", "RUNNING")
    with caplog.at_level("WARNING", logger="components.runs.run_dir"):
        assert run_to_continue(client, ExperimentConfig(), tmp_path / "out", resume=False) is None
    assert client.get_run(run_id).info.status == "KILLED" and "marking it KILLED" in caplog.text
    finished = _previous_run(client, experiment, tmp_path / "other", "FINISHED")
    run_to_continue(client, ExperimentConfig(), tmp_path / "other", resume=False)
    assert client.get_run(finished).info.status == "FINISHED"  # another run's status is never changed


def test_two_trainings_cannot_share_an_output_directory(tmp_path):
    with claim_output_dir(tmp_path / "out"):
        with pytest.raises(RuntimeError, match="is in use by another training"):
            with claim_output_dir(tmp_path / "out"):
                pass
    with claim_output_dir(tmp_path / "out"):  # released: usable again
        pass


def test_an_interrupted_training_ends_its_run_killed_and_an_error_ends_it_failed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    setup = setup_tracking("crash-safety", tracking_uri=uri)
    client = MlflowClient(uri)
    ended = {}
    for name, exc in (("interrupted", KeyboardInterrupt()), ("error", RuntimeError("bad batch"))):
        with pytest.raises(type(exc)):
            with start_run(setup, run_name=name) as run:
                ended[name] = run.run_id
                raise exc  # a cancellation (SIGTERM as an exception, Ctrl-C) / a bug
    assert client.get_run(ended["interrupted"]).info.status == "KILLED"
    assert client.get_run(ended["error"]).info.status == "FAILED"


def test_a_training_stopped_from_outside_leaves_its_run_killed_not_running(store, tmp_path):
    client, experiment = store
    assert mark_interrupted(tmp_path / "not-started", client) is None  # stopped before its run opened: nothing to do
    running = _previous_run(client, experiment, tmp_path / "out", "RUNNING")
    assert mark_interrupted(tmp_path / "out", client) == running
    assert client.get_run(running).info.status == "KILLED"
    finished = _previous_run(client, experiment, tmp_path / "done", "FINISHED")
    mark_interrupted(tmp_path / "done", client)
    assert client.get_run(finished).info.status == "FINISHED"
