"""Distributed data parallel on 2 CPU processes (gloo), launched by train_and_log under torchrun."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from mlflow import MlflowClient

from components.config import load_config
from components.runs.training_run import train_and_log
from components.training.data import load_training_data
from components.training.sampler import BucketBatchSampler

# torchrun's static rendezvous port (--master_port's default). A single-node torchrun given no --master_port picks a
# free port instead (torch/distributed/run.py `run`), which is what lets two DDP jobs share a host; naming a port in
# _train_under_torchrun would break that.
TORCHRUN_DEFAULT_PORT = 29500


@contextlib.contextmanager
def port_in_use(port: int) -> Iterator[None]:
    """Another DDP job on this host: its rendezvous store listens on `port` (or something else already does)."""
    with socket.socket() as sock:
        with contextlib.suppress(OSError):  # already taken: the same situation
            sock.bind(("127.0.0.1", port))
            sock.listen()
        yield


def test_two_ranks_train_on_different_data_and_log_once(tmp_path, tiny_bert_dir, data_dir, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = load_config(
        "configs/default.yaml",
        [
            f"data.data_dir={data_dir}",
            "data.max_examples={train: 32, dev: 8, test: 8}",
            f"model.text_encoder={tiny_bert_dir}",
            "model.align_dim=16",
            "model.permutations=4",
            "train.batch_size=8",
            "train.epochs=1",
            "train.device=cpu",
            "train.num_gpus=2",
            f"train.output_dir={tmp_path / 'out'}",
            "tracking.experiment=ddp-test",
        ],
    )
    with port_in_use(TORCHRUN_DEFAULT_PORT):  # another DDP job on the host holds it
        result = train_and_log(cfg)

    # The shards the trainer's sampler gives each rank (same lengths, seed and epoch as the training above).
    lengths = [len(e.tokens) for e in load_training_data(cfg.data).splits["train"]]
    seen = []
    for rank in (0, 1):
        sampler = BucketBatchSampler(lengths, cfg.train.batch_size, seed=cfg.train.seed, rank=rank, world_size=2)
        sampler.set_epoch(1)
        seen.append({i for batch in sampler for i in batch})
    assert seen[0] and seen[1]
    assert not seen[0] & seen[1], "both ranks would train on the same examples"
    assert len(seen[0] | seen[1]) == 32

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("ddp-test")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [result.run_id], "the run must be logged once, by rank 0"
    assert "test_f1" in runs[0].data.metrics
    # What the trainer itself did: rank 0 trained on its shard, half the split (32 on a single process).
    assert runs[0].data.metrics["train_samples"] == len(seen[0]) == 16
