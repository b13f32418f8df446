"""Alignment losses: the value functions, InfoNCE over Shapley values (against a hand computation), masks, and that
minimising it really aligns matching pairs."""

from __future__ import annotations

import itertools
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from components.model.alignment import (
    ContrastiveAlignment,
    Projected,
    Tokens,
    _infonce_over_targets,
    cosine_infonce,
    cosine_of_sum,
    coverage_game,
    coverage_infonce,
    coverage_scores,
    shapley_infonce,
)
from components.model.shapley import coverage_shapley, exact_shapley, monte_carlo_shapley

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


def _dot_of_sum(members: torch.Tensor, players: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """v_j(S) = (sum_{k in S} x_k) . y_j: members (..., N), players (N, d), targets (M, d) -> (..., M)."""
    return (members @ players) @ targets.T


def test_the_estimators_are_exact_on_an_additive_game():
    """With v_j(S) = (sum_S x) . y_j the game is additive, so phi[i, j] = x_i . y_j exactly, for both estimators."""
    dot_of_sum = _dot_of_sum
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


# -- the token coverage game ---------------------------------------------------------------------------------------
def _projected(n: int, t: int, d: int, lengths: list[int], seed: int) -> Projected:
    """Unit pooled vectors and unit token states; tokens beyond each sample's length are padding full of junk."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]  # (n, t)
    tokens = F.normalize(torch.randn(n, t, d, generator=g, dtype=torch.float64), dim=-1)
    junk = F.normalize(torch.ones(d, dtype=torch.float64), dim=-1)  # the same vector in every padded slot
    tokens = torch.where(mask[..., None], tokens, junk)
    return Projected(F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1), tokens, mask)


def test_coverage_scores_are_cosines_with_the_pooled_vector_or_the_best_real_token():
    players, targets = _projected(4, 5, 6, [5, 2, 3, 1], 20), _projected(3, 4, 6, [4, 1, 3], 21)
    pooled, maxsim = coverage_scores(players, targets, "pooled"), coverage_scores(players, targets, "maxsim")
    assert pooled.shape == maxsim.shape == (3, 4, 4)  # (targets, players, target tokens)
    for j, k, t in itertools.product(range(3), range(4), range(4)):
        u = targets.tokens[j, t]
        assert float(pooled[j, k, t]) == pytest.approx(float(u @ players.pooled[k]), abs=1e-12)
        real = players.tokens[k, : int(players.mask[k].sum())]  # player k's real tokens only
        assert float(maxsim[j, k, t]) == pytest.approx(float((real @ u).max()), abs=1e-12)


@pytest.mark.parametrize("kind", ["pooled", "maxsim"])
def test_coverage_game_is_the_game_over_the_masked_samples_and_their_real_tokens(kind):
    players, targets = _projected(6, 5, 8, [5, 3, 1, 4, 2, 5], 22), _projected(6, 4, 8, [4, 2, 3, 1, 4, 3], 23)
    mask = torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool)
    phi = coverage_game(players, targets, mask, kind)  # (N players, M targets)
    assert torch.equal(phi[~mask], torch.zeros(2, 6, dtype=torch.float64))
    assert torch.equal(phi[:, ~mask], torch.zeros(6, 2, dtype=torch.float64))
    for j in mask.nonzero().squeeze(1).tolist():  # target j: the definition on its real tokens and the kept players
        length = int(targets.mask[j].sum())
        scores = torch.stack(
            [
                targets.tokens[j, :length] @ players.pooled[k]
                if kind == "pooled"
                else (targets.tokens[j, :length] @ players.tokens[k, : int(players.mask[k].sum())].T).amax(dim=-1)
                for k in mask.nonzero().squeeze(1).tolist()
            ]
        )  # (kept players, real tokens)
        torch.testing.assert_close(phi[mask, j], coverage_shapley(scores), rtol=0, atol=1e-12)
    # Efficiency per target: the kept contexts share v_j(kept) = mean over real tokens of the best cover.
    torch.testing.assert_close(
        phi.sum(dim=0)[mask],
        coverage_scores(Projected(players.pooled[mask], players.tokens[mask], players.mask[mask]), targets, kind)
        .amax(dim=1)
        .mul(targets.mask)
        .sum(-1)
        .div(targets.mask.sum(-1))[mask],
        rtol=0,
        atol=1e-12,
    )


@pytest.mark.parametrize("kind", ["pooled", "maxsim"])
def test_coverage_infonce_is_symmetric_and_ignores_samples_outside_the_mask(kind):
    contexts, texts = _projected(5, 4, 6, [4, 2, 3, 1, 4], 24), _projected(5, 6, 6, [6, 3, 2, 5, 1], 25)
    mask, tau = torch.tensor([1, 1, 1, 0, 1], dtype=torch.bool), 0.1
    loss, phi = coverage_infonce(contexts, texts, mask, tau, kind)
    c_to_t = _infonce_over_targets(coverage_game(contexts, texts, mask, kind), mask, tau)  # contexts cover text tokens
    t_to_c = _infonce_over_targets(coverage_game(texts, contexts, mask, kind), mask, tau)  # texts cover context tokens
    assert float(loss) == pytest.approx((float(c_to_t) + float(t_to_c)) / 2, abs=1e-12)
    keep = mask.nonzero().squeeze(1)
    sub = lambda p: Projected(p.pooled[keep], p.tokens[keep], p.mask[keep])  # noqa: E731
    sub_loss, sub_phi = coverage_infonce(sub(contexts), sub(texts), torch.ones(4, dtype=torch.bool), tau, kind)
    assert float(loss) == pytest.approx(float(sub_loss), abs=1e-12)
    torch.testing.assert_close(phi[keep][:, keep], sub_phi, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["pooled", "maxsim"])
def test_alignment_module_plays_the_coverage_game_in_every_direction(kind):
    """Contexts <-> texts and contexts <-> image patches: each direction's loss is the coverage InfoNCE of the projected
    tokens, and each one alone sends gradients into both projections it reads."""
    torch.manual_seed(2)
    module = ContrastiveAlignment(
        12, 10, 8, 6, "shapley", temperature=0.1, game="token_coverage", coverage=kind
    ).double()
    n = 5
    text, context, image = torch.randn(n, 12).double(), torch.randn(n, 10).double(), torch.randn(n, 8).double()
    lengths = lambda t, real: torch.arange(t)[None, :] < torch.tensor(real)[:, None]  # noqa: E731 (n, t) bool
    text_tokens = Tokens(torch.randn(n, 7, 12).double(), lengths(7, [7, 3, 5, 2, 6]))
    context_tokens = Tokens(torch.randn(n, 4, 10).double(), lengths(4, [4, 2, 1, 3, 4]))
    image_tokens = Tokens(torch.randn(n, 3, 8).double(), torch.ones(n, 3, dtype=torch.bool))
    has_context = torch.tensor([1, 1, 1, 0, 1], dtype=torch.bool)
    has_image = torch.tensor([1, 0, 1, 1, 1], dtype=torch.bool)
    out = module(
        text,
        context,
        has_context,
        image,
        has_image,
        text_tokens=text_tokens,
        context_tokens=context_tokens,
        image_tokens=image_tokens,
    )
    t = module.project(module.proj_text, text, text_tokens)
    c = module.project(module.proj_context, context, context_tokens)
    v = module.project(module.proj_image, image, image_tokens)
    assert t.tokens.shape == (n, 7, 6) and torch.allclose(t.tokens.norm(dim=-1), torch.ones(n, 7, dtype=torch.float64))
    both = has_context & has_image
    directions = {
        "context->text": _infonce_over_targets(coverage_game(c, t, has_context, kind), has_context, 0.1),
        "text->context": _infonce_over_targets(coverage_game(t, c, has_context, kind), has_context, 0.1),
        "context->image": _infonce_over_targets(coverage_game(c, v, both, kind), both, 0.1),
        "image->context": _infonce_over_targets(coverage_game(v, c, both, kind), both, 0.1),
    }
    assert out.loss_ct.item() == pytest.approx(
        (directions["context->text"] + directions["text->context"]).item() / 2, abs=1e-12
    )
    assert out.loss_ci.item() == pytest.approx(
        (directions["context->image"] + directions["image->context"]).item() / 2, abs=1e-12
    )
    torch.testing.assert_close(out.shapley_ct, coverage_game(c, t, has_context, kind).detach(), rtol=0, atol=0)
    assert torch.isfinite(out.loss_ct) and torch.isfinite(out.loss_ci)
    reads = {
        "context->text": ("proj_context", "proj_text"),
        "text->context": ("proj_text", "proj_context"),
        "context->image": ("proj_context", "proj_image"),
        "image->context": ("proj_image", "proj_context"),
    }
    for name, loss in directions.items():
        module.zero_grad()
        loss.backward(retain_graph=True)
        for proj in reads[name]:
            grad = getattr(module, proj).weight.grad
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, (name, proj)
    module.zero_grad()
    (out.loss_ct + out.loss_ci).backward()
    assert all(getattr(module, p).weight.grad.abs().sum() > 0 for p in ("proj_text", "proj_context", "proj_image"))


def test_padded_tokens_do_not_change_the_coverage_loss():
    module = ContrastiveAlignment(12, 10, None, 6, "shapley", game="token_coverage", coverage="maxsim").double()
    text, context = torch.randn(4, 12).double(), torch.randn(4, 10).double()
    text_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    context_mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0]], dtype=torch.bool)
    text_states, context_states = torch.randn(4, 4, 12).double(), torch.randn(4, 3, 10).double()
    has_context = torch.ones(4, dtype=torch.bool)

    def loss(ts: torch.Tensor, cs: torch.Tensor) -> float:
        return module(
            text, context, has_context, text_tokens=Tokens(ts, text_mask), context_tokens=Tokens(cs, context_mask)
        ).loss_ct.item()

    other_text = torch.where(text_mask[..., None], text_states, 50 * torch.randn(4, 4, 12).double())
    other_context = torch.where(context_mask[..., None], context_states, 50 * torch.randn(4, 3, 10).double())
    assert loss(other_text, other_context) == pytest.approx(loss(text_states, context_states), abs=1e-12)
    real_change = text_states.clone()
    real_change[0, 1] += 1.0
    assert loss(real_change, context_states) != pytest.approx(loss(text_states, context_states), abs=1e-9)


def test_the_coverage_game_needs_token_states():
    module = ContrastiveAlignment(12, 10, None, 6, "shapley", game="token_coverage")
    with pytest.raises(ValueError, match="token_coverage' needs token states"):
        module(torch.randn(3, 12), torch.randn(3, 10), torch.ones(3, dtype=torch.bool))


def test_coverage_game_under_bf16_autocast_scores_in_float32():
    """As under the trainer's bf16 autocast: projections run in bf16, the cosines and the game in float32."""
    torch.manual_seed(3)
    module = ContrastiveAlignment(12, 10, None, 6, "shapley", game="token_coverage", coverage="maxsim")
    text, context = torch.randn(4, 12), torch.randn(4, 10)
    text_tokens = Tokens(torch.randn(4, 5, 12), torch.ones(4, 5, dtype=torch.bool))
    context_tokens = Tokens(torch.randn(4, 3, 10), torch.ones(4, 3, dtype=torch.bool))
    has_context = torch.ones(4, dtype=torch.bool)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(text, context, has_context, text_tokens=text_tokens, context_tokens=context_tokens)
    reference = module(text, context, has_context, text_tokens=text_tokens, context_tokens=context_tokens)
    assert out.shapley_ct.dtype == torch.float32
    torch.testing.assert_close(out.shapley_ct, reference.shapley_ct, rtol=0, atol=0.02)  # bf16 projections only
    out.loss_ct.backward()
    assert torch.isfinite(module.proj_text.weight.grad).all() and module.proj_text.weight.grad.abs().sum() > 0
