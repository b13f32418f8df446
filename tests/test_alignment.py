"""Alignment losses: the value functions, InfoNCE over Shapley values (against a hand computation), masks, and that
minimising it really aligns matching pairs."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from components.model.alignment import (
    ContrastiveAlignment,
    cosine_infonce,
    cosine_of_sum,
    of_sum,
    shapley_infonce,
)
from components.model.shapley import exact_shapley, monte_carlo_shapley

torch.set_num_threads(2)


def _vectors(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_cosine_of_sum_equals_the_cosine_of_explicit_sums():
    players, targets = _vectors(5, 7, 0), _vectors(3, 7, 1)
    members = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.float64)
    values = cosine_of_sum(members, players, targets)  # (3 coalitions, 3 targets)
    sums = members @ players
    expected = F.cosine_similarity(sums[:, None, :], targets[None, :, :], dim=-1)
    expected[1] = 0.0  # the empty coalition
    torch.testing.assert_close(values, expected, rtol=0, atol=1e-12)


def test_a_different_overlap_plugs_in_with_one_line():
    """With v_j(S) = (sum_S x) . y_j the game is additive, so phi[i, j] = x_i . y_j exactly, for both estimators."""
    dot_of_sum = of_sum(lambda sums, targets: sums @ targets.T)
    players, targets = _vectors(6, 4, 2), _vectors(6, 4, 3)
    expected = players @ targets.T
    torch.testing.assert_close(exact_shapley(players, targets, dot_of_sum), expected, rtol=0, atol=1e-12)
    mc = monte_carlo_shapley(players, targets, dot_of_sum, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(mc, expected, rtol=0, atol=1e-12)


def test_shapley_infonce_matches_a_hand_computation():
    contexts, texts, tau = _vectors(5, 6, 4), _vectors(5, 6, 5), 0.1
    mask = torch.ones(5, dtype=torch.bool)
    estimate = partial(exact_shapley, value_fn=cosine_of_sum)
    loss, phi = shapley_infonce(contexts, texts, mask, tau, estimate)
    psi = exact_shapley(texts, contexts, cosine_of_sum)  # texts as players, contexts as targets

    def one_direction(values: torch.Tensor) -> float:
        total = 0.0
        for j in range(5):  # target j: softmax over the players' contributions to it
            logits = [float(values[i, j]) / tau for i in range(5)]
            total += -(logits[j] - math.log(sum(math.exp(v) for v in logits)))
        return total / 5

    assert float(loss) == pytest.approx((one_direction(phi) + one_direction(psi)) / 2, abs=1e-10)
    torch.testing.assert_close(phi, exact_shapley(contexts, texts, cosine_of_sum))


def test_samples_outside_the_mask_are_null_players_and_leave_the_loss_alone():
    contexts, texts, tau = _vectors(7, 5, 6), _vectors(7, 5, 7), 0.2
    mask = torch.tensor([1, 0, 1, 1, 0, 1, 1], dtype=torch.bool)
    estimate = partial(exact_shapley, value_fn=cosine_of_sum)
    loss, phi = shapley_infonce(contexts, texts, mask, tau, estimate)
    torch.testing.assert_close(phi[~mask], torch.zeros(2, 7, dtype=phi.dtype), rtol=0, atol=1e-15)
    # The same as the game played by the masked samples alone.
    sub_loss, sub_phi = shapley_infonce(contexts[mask], texts[mask], torch.ones(5, dtype=torch.bool), tau, estimate)
    torch.testing.assert_close(phi[mask][:, mask], sub_phi, rtol=0, atol=1e-12)
    assert float(loss) == pytest.approx(float(sub_loss), abs=1e-12)


def test_cosine_infonce_is_clips_symmetric_loss():
    a, b, tau = _vectors(6, 4, 8), _vectors(6, 4, 9), 0.07
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / tau
    labels = torch.arange(6)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    loss = cosine_infonce(a, b, torch.ones(6, dtype=torch.bool), tau)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-12)


@pytest.mark.parametrize("kind", ["shapley", "infonce"])
def test_minimising_the_loss_makes_matching_pairs_win(kind):
    """Free embeddings, Adam: the loss falls, and every text's largest contribution comes from its own context."""
    torch.manual_seed(0)
    n, d = 8, 16
    contexts = torch.randn(n, d, requires_grad=True)
    texts = torch.randn(n, d, requires_grad=True)
    optimizer = torch.optim.Adam([contexts, texts], lr=0.05)
    mask = torch.ones(n, dtype=torch.bool)
    estimate = partial(monte_carlo_shapley, value_fn=cosine_of_sum, permutations=16)

    def loss_fn():
        if kind == "shapley":
            return shapley_infonce(contexts, texts, mask, 0.07, estimate)[0]
        return cosine_infonce(contexts, texts, mask, 0.07)

    first = loss_fn().item()
    for _ in range(150):
        optimizer.zero_grad()
        loss_fn().backward()
        optimizer.step()
    assert loss_fn().item() < 0.5 * first
    phi = exact_shapley(contexts.detach(), texts.detach(), cosine_of_sum)  # judged by the exact values
    assert torch.equal(phi.argmax(dim=0), torch.arange(n))


def test_alignment_module_masks_contexts_and_images():
    torch.manual_seed(1)
    module = ContrastiveAlignment(12, 10, 8, 6, "shapley", estimator="exact", temperature=0.1).double()
    text, context, image = torch.randn(6, 12).double(), torch.randn(6, 10).double(), torch.randn(6, 8).double()
    has_context = torch.tensor([1, 1, 1, 1, 1, 0], dtype=torch.bool)
    has_image = torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.bool)
    out = module(text, context, has_context, image, has_image)
    assert out.shapley_ct.shape == (6, 6) and not out.shapley_ct.requires_grad
    torch.testing.assert_close(out.shapley_ct[5], torch.zeros(6, dtype=torch.float64), rtol=0, atol=1e-15)  # null
    # L_ci only over samples with both a context and an image: 0, 2, 3.
    keep = has_context & has_image
    z_c = F.normalize(module.proj_context(context[keep]), dim=-1)
    z_v = F.normalize(module.proj_image(image[keep]), dim=-1)
    expected, _ = shapley_infonce(z_c, z_v, torch.ones(3, dtype=torch.bool), 0.1, module.estimate)
    assert out.loss_ci.item() == pytest.approx(expected.item(), abs=1e-12)
    (out.loss_ct + out.loss_ci).backward()
    assert module.proj_image.weight.grad.abs().sum() > 0


def test_no_context_at_all_gives_zero_loss_that_still_backpropagates():
    module = ContrastiveAlignment(12, 12, None, 6, "shapley", permutations=4)
    text = torch.randn(4, 12, requires_grad=True)
    out = module(text, torch.randn(4, 12), torch.zeros(4, dtype=torch.bool))
    assert out.loss_ct.item() == 0.0 and out.loss_ci.item() == 0.0
    assert torch.equal(out.shapley_ct, torch.zeros(4, 4))
    out.loss_ct.backward()
    assert text.grad is not None and torch.isfinite(text.grad).all()
