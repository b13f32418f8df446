"""Epoch checkpoints on shared storage (components/training/checkpoint_store.py): published atomically, read back
whole on another host, checked on the way (a training resumed from them: tests/test_trainer.py). S3 is moto's server
reached through real boto3; the "other host" is a fresh output directory."""

from __future__ import annotations

import json

import pytest
import torch

from components.common.object_store import open_store
from components.runs.run_dir import RUN_ID_FILE
from components.training.checkpoint import TrainerState, save_best, save_checkpoint
from components.training.checkpoint_store import POINTER, CheckpointStore, restore_checkpoint


class TinyModel(torch.nn.Linear):
    def save_pretrained(self, directory):
        torch.save(self.state_dict(), directory / "weights.pt")


def _write_epoch(checkpoint_dir, model, epoch: int, best: bool) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    with torch.no_grad():
        model.weight.add_(1.0)  # every epoch changes the weights
    if best:
        save_best(checkpoint_dir, model)
    save_checkpoint(checkpoint_dir, model, optimizer, scheduler, TrainerState(config_hash="c", epoch=epoch))


def _tree(directory) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(params=["directory", "s3"])
def location(request, tmp_path):
    if request.param == "directory":
        return str(tmp_path / "shared")
    s3 = request.getfixturevalue("s3_env")
    return f"s3://{s3.bucket}/checkpoints/flow-run-1"


def test_the_last_published_epoch_comes_back_whole_on_another_host(location, tmp_path):
    store = CheckpointStore(location)
    here = tmp_path / "host-a" / "checkpoints"
    model = TinyModel(3, 2)
    _write_epoch(here, model, 1, best=True)
    store.push(here, 1)
    _write_epoch(here, model, 2, best=False)  # dev did not improve: best/ stays the epoch-1 model
    store.push(here, 2)

    pointer = store.pointer()
    assert pointer["epoch"] == 2
    assert pointer["last"]["prefix"] == "epochs/000002/last" and pointer["best"]["prefix"] == "epochs/000001/best"
    # Only what the pointer names is kept: epoch 1's `last` is gone, its `best` stays.
    names = store.store.list("epochs/")
    assert names and all(n.startswith(("epochs/000002/last/", "epochs/000001/best/")) for n in names)

    there = tmp_path / "host-b" / "checkpoints"
    assert store.pull(there) == 2
    assert _tree(there) == _tree(here)


def test_an_interrupted_publish_leaves_the_previous_epoch_in_force(location, tmp_path):
    here = tmp_path / "host-a" / "checkpoints"
    model = TinyModel(3, 2)
    _write_epoch(here, model, 1, best=True)
    CheckpointStore(location).push(here, 1)
    published = _tree(here)

    class DiesBeforeThePointer:  # the store as a process killed after the files, before the pointer
        def __init__(self, inner):
            self.inner, self.url = inner, inner.url

        def put_bytes(self, name, data):
            if name == POINTER:
                raise KeyboardInterrupt("killed")
            self.inner.put_bytes(name, data)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    _write_epoch(here, model, 2, best=True)
    with pytest.raises(KeyboardInterrupt):
        CheckpointStore(location, store=DiesBeforeThePointer(open_store(location))).push(here, 2)

    store = CheckpointStore(location)
    assert store.pointer()["epoch"] == 1
    there = tmp_path / "host-b" / "checkpoints"
    assert store.pull(there) == 1 and _tree(there) == published
    _write_epoch(here, model, 3, best=False)
    store.push(here, 3)  # the orphaned epoch-2 files go with the next publish
    assert not [n for n in store.store.list("epochs/") if n.startswith("epochs/000002/")]


def test_a_damaged_object_is_named_and_nothing_is_swapped_in(location, tmp_path):
    store = CheckpointStore(location)
    here = tmp_path / "host-a" / "checkpoints"
    _write_epoch(here, TinyModel(3, 2), 1, best=True)
    store.push(here, 1)
    name = "epochs/000001/last/model.safetensors"
    store.store.put_bytes(name, b"not the weights")

    there = tmp_path / "host-b" / "checkpoints"
    with pytest.raises(ValueError, match="model.safetensors: sha256 .* damaged"):
        store.pull(there)
    assert not (there / "last").exists()


def test_restore_names_the_mlflow_run_before_any_epoch_is_published(location, tmp_path):
    store = CheckpointStore(location)
    store.save_run_id("abc123")
    out = tmp_path / "host-b"
    assert restore_checkpoint(location, out, RUN_ID_FILE) is None  # killed in epoch 1: nothing to resume from
    assert (out / RUN_ID_FILE).read_text() == "abc123"  # but the run to continue is known
    assert json.loads(store.store.get_bytes("run.json")) == {"mlflow_run_id": "abc123"}
