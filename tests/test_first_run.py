"""A newcomer's first `shapca run`: no Prefect home yet, so Prefect's temporary server must create and migrate its
database before it answers. It must succeed on the first attempt (Prefect's own 20 s start limit used to lose that
race on 2 cores: "Timed out while attempting to connect to ephemeral Prefect API server")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TINY = [
    "train.device=cpu",
    "train.epochs=1",
    "train.batch_size=16",
    "data.max_examples={train: 48, dev: 24, test: 24}",
    "model.permutations=8",
    "tracking.allow_partial_dev=true",
]


def test_shapca_run_succeeds_first_time_with_an_empty_prefect_home(project_root, tmp_path):
    home = tmp_path / "empty-prefect-home"  # does not exist yet, like ~/.prefect on a fresh machine
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(
        PREFECT_HOME=str(home),
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="2",
    )
    overrides = [arg for o in TINY + [f"train.output_dir={tmp_path / 'outputs'}"] for arg in ("-o", o)]
    result = subprocess.run(
        [str(Path(sys.executable).with_name("shapca")), "run", *overrides],
        cwd=project_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "Timed out while attempting to connect" not in output
    assert (home / "prefect.db").is_file(), "the run did not use the fresh Prefect home"
    assert "shapca-twitter2017 v1 -> champion" in output, output[-3000:]
