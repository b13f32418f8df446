"""The trainer on a real Twitter-2017 subset with real BLIP-2 contexts and a tiny random BERT."""

from __future__ import annotations

import pytest
import torch

from components.config import load_config
from components.runs.run_dir import RUN_ID_FILE
from components.training.checkpoint_store import CheckpointStore, restore_checkpoint
from components.training.data import load_training_data
from components.training.step import NonFiniteLossError
from components.training.trainer import fit


def _config(tmp_path, tiny_bert_dir, data_dir, **train):
    overrides = [
        f"data.data_dir={data_dir}",
        "data.max_examples={train: 48, dev: 16, test: 16}",
        f"model.text_encoder={tiny_bert_dir}",
        "model.align_dim=16",
        "model.permutations=8",
        "train.batch_size=8",
        "train.epochs=3",
        "train.patience=10",
        "train.lr_encoder=1e-3",
        f"train.output_dir={tmp_path}",
    ] + [f"train.{k}={v}" for k, v in train.items()]
    return load_config("configs/default.yaml", overrides)


class Interrupt(Exception):
    pass


def test_resumed_run_ends_where_an_uninterrupted_run_ends(tmp_path, tiny_bert_dir, data_dir):
    full_cfg = _config(tmp_path / "full", tiny_bert_dir, data_dir)
    data = load_training_data(full_cfg.data)
    full = fit(full_cfg, data)

    cut_cfg = _config(tmp_path / "cut", tiny_bert_dir, data_dir)

    def stop_after_first_epoch(epoch, metrics):
        if epoch == 1:
            raise Interrupt  # as if the process died right after the epoch-1 checkpoint

    with pytest.raises(Interrupt):
        fit(cut_cfg, data, on_epoch_end=stop_after_first_epoch)
    checkpoints = tmp_path / "cut" / "checkpoints"
    first_part = torch.load(checkpoints / "last" / "trainer_state.pt", weights_only=True)["trainer"]["train_seconds"]
    # A kill between the two renames of the checkpoint swap: `last` gone, the complete checkpoint in `last.old`.
    (checkpoints / "last").rename(checkpoints / "last.old")
    resumed = fit(cut_cfg, data, resume=True)
    assert resumed.train_seconds > first_part > 0  # the resumed run's time counts both parts
    assert not (checkpoints / "last.old").exists()

    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    # The frozen context states are cached from the batch that first met each context; the resumed process starts
    # with an empty cache and recomputes them in other batches, whose padding changes float rounding (~1e-7 relative).
    for a, b in zip(full.history, resumed.history, strict=False):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6, abs=1e-6)
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for key in full_state:
        torch.testing.assert_close(full_state[key], resumed_state[key], msg=key)
    assert full.test.metrics == resumed.test.metrics


def test_a_training_resumed_on_another_host_ends_where_an_uninterrupted_one_ends(
    s3_env, tmp_path, tiny_bert_dir, data_dir
):
    """The checkpoint of epoch 2 published to S3 (components/training/checkpoint_store.py) and pulled into an empty
    output directory carries everything the rest of the training depends on."""
    host_a = tmp_path / "host-a"
    cfg_a = _config(host_a, tiny_bert_dir, data_dir)
    data = load_training_data(cfg_a.data)
    full = fit(_config(tmp_path / "full", tiny_bert_dir, data_dir), data)

    location = f"s3://{s3_env.bucket}/checkpoints/flow-run-1"

    def publish_then_die(epoch, metrics):
        CheckpointStore(location).push(host_a / "checkpoints", epoch)
        if epoch == 2:
            raise Interrupt  # the host is gone right after publishing epoch 2

    with pytest.raises(Interrupt):
        fit(cfg_a, data, on_epoch_end=publish_then_die)

    host_b = tmp_path / "host-b"
    assert restore_checkpoint(location, host_b, RUN_ID_FILE) == 2
    resumed = fit(_config(host_b, tiny_bert_dir, data_dir), data, resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for a, b in zip(full.history, resumed.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6, abs=1e-6)
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(value, resumed.model.state_dict()[key], msg=key)
    assert full.test.metrics == resumed.test.metrics


def test_training_changes_the_weights_and_keeps_the_best_dev_epoch(tmp_path, tiny_bert_dir, data_dir):
    cfg = _config(tmp_path, tiny_bert_dir, data_dir, epochs=2)
    data = load_training_data(cfg.data)
    result = fit(cfg, data)
    best = max(result.history, key=lambda h: h["dev_f1"])
    assert result.best_epoch == best["epoch"]
    assert result.history[0]["train_loss"] > 0
    assert (result.checkpoint_dir / "best").is_dir() and (
        result.checkpoint_dir / "last" / "model.safetensors"
    ).is_file()
    assert set(result.test.metrics) >= {"precision", "recall", "f1"}


def test_a_non_finite_loss_stops_training_with_a_clear_message(tmp_path, tiny_bert_dir, data_dir, monkeypatch):
    cfg = _config(tmp_path, tiny_bert_dir, data_dir, epochs=1)
    data = load_training_data(cfg.data)
    from components.model.shapca import ShapCA

    built = ShapCA.from_config

    def poisoned(*args, **kwargs):  # the model fit builds, with one weight NaN
        model = built(*args, **kwargs)
        with torch.no_grad():
            next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))
        return model

    monkeypatch.setattr(ShapCA, "from_config", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 1: loss is nan"):
        fit(cfg, data)


def test_resuming_with_another_config_is_refused(tmp_path, tiny_bert_dir, data_dir):
    cfg = _config(tmp_path, tiny_bert_dir, data_dir, epochs=1)
    data = load_training_data(cfg.data)
    fit(cfg, data)
    other = _config(tmp_path, tiny_bert_dir, data_dir, epochs=1, lr_head=0.5)
    with pytest.raises(ValueError, match="written by another config"):
        fit(other, data, resume=True)
