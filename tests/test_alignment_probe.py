"""The alignment probe: its statistics by hand on known score matrices, and on a tiny model over real Twitter-2017
examples with real BLIP-2 contexts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from components.config import load_config
from components.model.shapca import ShapCA
from components.training.alignment_probe import _Accumulator, _column_agreement, probe_alignment
from components.training.data import load_training_data


def test_statistics_of_a_known_score_matrix():
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.5],
            [0.2, 0.3, 0.6],  # column 1: candidate 2 beats the own context
            [0.1, 0.35, 0.4],
        ]
    )  # column 2: candidate 1 beats the own context
    acc = _Accumulator(tau=0.5)
    acc.add(scores)
    stats = acc.stats()
    assert stats.top1 == pytest.approx(1 / 3)
    assert stats.own == pytest.approx((0.9 + 0.3 + 0.4) / 3)
    others = [(0.2 + 0.1) / 2, (0.1 + 0.35) / 2, (0.5 + 0.6) / 2]
    assert stats.other == pytest.approx(sum(others) / 3)
    assert stats.margin == pytest.approx((stats.own - stats.other) / 0.5)
    by_hand = -sum(math.log(F.softmax(scores[:, j] / 0.5, dim=0)[j].item()) for j in range(3)) / 3
    assert stats.infonce == pytest.approx(by_hand, rel=1e-5)


def test_column_agreement_of_a_rescaled_and_of_a_reversed_matrix():
    cos = torch.tensor([[0.9, 0.1], [0.2, 0.3], [0.4, -0.5]])
    correlation, scale = _column_agreement(0.25 * cos + 0.01, cos)
    torch.testing.assert_close(correlation, torch.ones(2))
    torch.testing.assert_close(scale, torch.full((2,), 0.25))
    correlation, _ = _column_agreement(-cos, cos)
    torch.testing.assert_close(correlation, -torch.ones(2))


def test_an_empty_accumulator_has_no_statistics():
    assert _Accumulator(tau=0.07).stats() is None


def _model_and_data(tiny_bert_dir, data_dir, **model):
    overrides = [
        f"data.data_dir={data_dir}",
        "data.max_examples={train: 8, dev: 24, test: 8}",
        f"model.text_encoder={tiny_bert_dir}",
        "model.align_dim=16",
        "model.permutations=8",
    ]
    overrides += [f"model.{key}={value}" for key, value in model.items()]
    cfg = load_config("configs/default.yaml", overrides)
    data = load_training_data(cfg.data)
    torch.manual_seed(0)
    return ShapCA.from_config(cfg.model, task=data.task, labels=data.labels), data


def test_probe_of_a_shapca_model_on_real_examples(tiny_bert_dir, data_dir):
    model, data = _model_and_data(tiny_bert_dir, data_dir)
    result = probe_alignment(model, data, "dev", batch_size=8)
    assert (result.batches, result.targets) == (3, 24)  # every dev tweet of Twitter-2017 has a BLIP-2 caption
    for stats in (result.cosine, result.shapley):
        assert 0.0 <= stats.top1 <= 1.0 and stats.infonce > 0
    # Efficiency: a target's Shapley values sum to v_j(all contexts) = a cosine <= 1, so with batches of n = 8
    # own + (n - 1) * other (averaged over targets) is at most 1: the values are about 1/n the size of cosines.
    assert result.shapley.own + 7 * result.shapley.other <= 1.0 + 1e-5
    assert 0.0 < result.context_gate < 1.0
    assert -1.0 <= result.shapley_cosine_correlation <= 1.0 and result.shapley_cosine_scale > 0
    metrics = result.metrics()
    assert {"dev_probe_cosine_top1", "dev_probe_shapley_margin", "dev_probe_context_gate"} <= set(metrics)


def test_probe_of_models_without_alignment(tiny_bert_dir, data_dir):
    fusion, data = _model_and_data(tiny_bert_dir, data_dir, alignment="none")
    result = probe_alignment(fusion, data, "dev", batch_size=8)
    assert result.cosine is None and result.shapley is None and 0.0 < result.context_gate < 1.0
    assert set(result.metrics()) == {"dev_probe_context_gate"}

    text_only, data = _model_and_data(tiny_bert_dir, data_dir, alignment="none", context_mode="none")
    assert probe_alignment(text_only, data, "dev", batch_size=8).metrics() == {}


def test_probe_is_reproducible_and_k_can_be_changed(tiny_bert_dir, data_dir):
    model, data = _model_and_data(tiny_bert_dir, data_dir)
    first, again = (probe_alignment(model, data, "dev", batch_size=8, limit=16) for _ in range(2))
    assert first.shapley == again.shapley and first.permutations == 8  # the model's K
    more = probe_alignment(model, data, "dev", batch_size=8, limit=16, permutations=200)
    assert more.permutations == 200 and more.shapley != first.shapley and more.cosine == first.cosine

    exact, data = _model_and_data(tiny_bert_dir, data_dir, estimator="exact")
    with pytest.raises(ValueError, match="exact Shapley values"):
        probe_alignment(exact, data, "dev", batch_size=8, limit=8, permutations=16)


@pytest.mark.parametrize("coverage", ["pooled", "maxsim"])
def test_probe_of_the_token_coverage_game_scores_what_training_scores(tiny_bert_dir, data_dir, coverage):
    model, data = _model_and_data(
        tiny_bert_dir, data_dir, alignment="shapley", shapley_game="token_coverage", coverage_scores=coverage
    )
    result = probe_alignment(model, data, "dev", batch_size=8)
    assert (result.game, result.permutations, result.targets) == (f"token_coverage/{coverage}", None, 24)
    assert -1.0 <= result.shapley_cosine_correlation <= 1.0 and result.shapley_cosine_scale > 0
    assert result.shapley.own + 7 * result.shapley.other <= 1.0 + 1e-5  # v_j(all) is a mean of cosines
    # The probe's phi is the phi of the training loss: the same statistics from the model's own forward passes.
    by_forward = _Accumulator(tau=model.alignment.temperature)
    model.eval()
    dataset = data.example_dataset(data.splits["dev"])
    with torch.no_grad():
        for start in range(0, 24, 8):
            batch = model.processor([dataset[i] for i in range(start, min(start + 8, len(dataset)))])
            by_forward.add(model(batch).shapley.float())
    for key, value in vars(by_forward.stats()).items():
        assert getattr(result.shapley, key) == pytest.approx(value, abs=1e-5), key
    with pytest.raises(ValueError, match="exact Shapley values"):
        probe_alignment(model, data, "dev", batch_size=8, limit=8, permutations=16)
