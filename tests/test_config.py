"""One source of defaults: the config classes' defaults are the embedded default recipe that configs/default.yaml
writes out, and a task head's settings are its task's, filled in for the dataset's task."""

from __future__ import annotations

import pytest

from components.config import ExperimentConfig, config_identity, identity_from_params, load_config
from components.model.shapca_config import ShapCAConfig


def test_the_classes_defaults_are_the_default_yaml(project_root):
    assert ExperimentConfig() == load_config(project_root / "configs" / "default.yaml")
    assert load_config() == ExperimentConfig()  # no file: the same recipe
    model = ShapCAConfig()
    assert (model.alignment, model.context_trainable_layers, model.context_mode) == ("infonce", 1, "fusion")
    assert (model.word_features, model.word_features_at) == ("chars", "states")  # the dev winner of issue 24


def test_the_paper_config_says_what_it_trains(project_root):
    paper = load_config(project_root / "configs" / "paper.yaml").model
    assert (paper.alignment, paper.shapley_game, paper.context_trainable_layers) == ("shapley", "cosine_of_sum", None)


def test_head_settings_are_the_dataset_tasks_written_out_in_full():
    assert ExperimentConfig().model.head == {}  # the MNER head has no settings of its own
    joint = load_config(None, ["data.dataset=mnre-joint"])
    assert joint.model.head == {"pair_hidden": 256}  # the default, written out: params and identity name it
    assert joint.flat()["model.head.pair_hidden"] == 256
    assert load_config(None, ["data.dataset=mnre-joint", "model.head.pair_hidden=64"]).model.head == {"pair_hidden": 64}
    with pytest.raises(ValueError, match=r"model.head: not a setting of the ner head \(its settings: none\)"):
        load_config(None, ["model.head.pair_hidden=64"])
    with pytest.raises(ValueError, match="pair_hidden"):
        load_config(None, ["data.dataset=mnre-joint", "model.head.pair_hidden=0"])


def test_a_runs_identity_read_back_holds_its_head_settings():
    """The ablation finds a run by its config read back from MLflow params: a head setting is part of it."""
    joint = load_config(None, ["data.dataset=mnre-joint", "model.head.pair_hidden=64"])
    params = {k: str(v) for k, v in joint.flat().items()} | {"data.train_size": "7356"}
    assert identity_from_params(params) == config_identity(joint)
    # A run logged before head settings moved (model.pair_hidden) is read back without it.
    old = {k: str(v) for k, v in ExperimentConfig().flat().items()} | {"model.pair_hidden": "256"}
    assert identity_from_params(old) == config_identity(ExperimentConfig())
