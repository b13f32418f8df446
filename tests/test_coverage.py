"""The token coverage game's closed-form Shapley values: against the definition (plain-Python enumeration), the generic
estimators, the axioms, masks, gradients and precision."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from components.benchmarks.shapley import coverage_value
from components.model.shapley import coverage_shapley, exact_shapley, monte_carlo_shapley

torch.set_num_threads(2)


def _scores(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _brute_force(scores: list[list[float]]) -> list[float]:
    """The definition in plain Python: every coalition S without i, weight |S|!(N-|S|-1)!/N!,
    v(S) = mean_t max_{k in S} a_k(t), v({}) = 0."""
    n, t = len(scores), len(scores[0])

    def value(coalition: tuple[int, ...]) -> float:
        return 0.0 if not coalition else sum(max(scores[k][u] for k in coalition) for u in range(t)) / t

    phi = [0.0] * n
    for i in range(n):
        others = [k for k in range(n) if k != i]
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for coalition in itertools.combinations(others, size):
                phi[i] += weight * (value(coalition + (i,)) - value(coalition))
    return phi


def _cases():
    """(name, scores (N, T)): random N <= 7, T <= 5; ties (rounded to 0.5, repeated players); signs mixed, all
    negative, all positive."""
    g = torch.Generator().manual_seed(0)
    for case in range(24):
        n, t = int(torch.randint(1, 8, (1,), generator=g)), int(torch.randint(1, 6, (1,), generator=g))
        scores = torch.randn(n, t, generator=g, dtype=torch.float64)
        kind = ("mixed", "ties", "negative", "positive")[case % 4]
        if kind == "ties":
            scores = (scores * 2).round() / 2  # many equal scores within a token
            if n > 1:
                scores[-1] = scores[0]  # and a repeated player
        elif kind == "negative":
            scores = -scores.abs() - 0.01
        elif kind == "positive":
            scores = scores.abs() + 0.01
        yield f"{kind}-n{n}-t{t}", scores


@pytest.mark.parametrize("name, scores", list(_cases()), ids=[name for name, _ in _cases()])
def test_closed_form_equals_brute_force_enumeration(name, scores):
    expected = torch.tensor(_brute_force(scores.tolist()), dtype=torch.float64)
    torch.testing.assert_close(coverage_shapley(scores), expected, rtol=0, atol=1e-9)


def test_all_negative_scores_a_worked_example():
    """N = 2, one token, a = (-0.5, -0.1). Player 0: joins {} (-0.5) or {1} (gains 0) -> -0.25. Player 1: joins {}
    (-0.1) or {0} (-0.1 - -0.5 = 0.4) -> 0.15. The baseline is v({}) = 0, not a clip at 0."""
    phi = coverage_shapley(torch.tensor([[-0.5], [-0.1]], dtype=torch.float64))
    torch.testing.assert_close(phi, torch.tensor([-0.25, 0.15], dtype=torch.float64), rtol=0, atol=1e-15)


def test_batched_targets_equal_one_at_a_time_and_the_generic_exact_enumeration():
    scores = _scores((3, 4, 6, 5), 1)  # (B1, B2, N, T)
    phi = coverage_shapley(scores)
    assert phi.shape == (3, 4, 6)
    for b1, b2 in itertools.product(range(3), range(4)):
        one = scores[b1, b2]  # (N, T)
        torch.testing.assert_close(phi[b1, b2], coverage_shapley(one), rtol=0, atol=1e-15)
        exact = exact_shapley(one, one[:1], coverage_value)[:, 0]  # 2^N coalitions through the value function
        torch.testing.assert_close(phi[b1, b2], exact, rtol=0, atol=1e-12)


def test_efficiency_symmetry_and_shared_credit():
    scores = _scores((5, 7, 9), 2)
    phi = coverage_shapley(scores)
    torch.testing.assert_close(phi.sum(dim=-1), scores.amax(dim=-2).mean(dim=-1), rtol=0, atol=1e-12)  # v(all)
    # Redundant covers share credit: on a token, what the best cover adds above the runner-up (0.9 - 0.2) goes to it
    # alone, and is split in half when a copy of it joins; the baseline step 0.2 is shared by all players.
    alone = coverage_shapley(torch.tensor([[0.9], [0.2]], dtype=torch.float64))
    shared = coverage_shapley(torch.tensor([[0.9], [0.2], [0.9]], dtype=torch.float64))
    torch.testing.assert_close(alone, torch.tensor([0.1 + 0.7, 0.1], dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(
        shared, torch.tensor([0.2 / 3 + 0.35, 0.2 / 3, 0.2 / 3 + 0.35], dtype=torch.float64), rtol=0, atol=1e-15
    )


def test_monte_carlo_estimator_converges_to_the_closed_form():
    scores = _scores((10, 6), 3)
    exact = coverage_shapley(scores)

    def error(k: int) -> float:
        errors = []
        for seed in range(4):
            g = torch.Generator().manual_seed(seed)
            estimate = monte_carlo_shapley(scores, scores[:1], coverage_value, k, generator=g)[:, 0]
            errors.append(float((estimate - exact).norm() / exact.norm()))
        return sum(errors) / len(errors)

    e16, e256, e4096 = error(16), error(256), error(4096)
    assert e16 > e256 > e4096
    assert e4096 < 0.01 and e4096 < e16 / 8


def test_gradcheck():
    scores = _scores((2, 5, 4), 4).requires_grad_()  # distinct values: the sort's order is locally constant
    mask = torch.tensor([[1, 1, 0, 1], [1, 0, 1, 1]], dtype=torch.bool)
    assert torch.autograd.gradcheck(coverage_shapley, (scores,))
    assert torch.autograd.gradcheck(
        lambda s: coverage_shapley(s, mask, torch.tensor([1, 0, 1, 1, 1]).bool()), (scores,)
    )


def test_token_mask_leaves_padding_out_of_the_mean():
    scores = _scores((3, 5, 6), 5)  # 3 targets with 4, 6 and 2 real tokens
    lengths = [4, 6, 2]
    mask = torch.arange(6)[None, :] < torch.tensor(lengths)[:, None]  # (3, T)
    padded = scores.masked_fill(~mask[:, None, :], 100.0)  # whatever sits in the padding
    phi = coverage_shapley(padded, token_mask=mask)
    for j, length in enumerate(lengths):
        torch.testing.assert_close(phi[j], coverage_shapley(scores[j, :, :length]), rtol=0, atol=1e-15)
    no_tokens = coverage_shapley(scores, token_mask=torch.zeros(6, dtype=torch.bool))  # worth 0 to everybody
    assert torch.equal(no_tokens, torch.zeros(3, 5, dtype=torch.float64))


def test_players_outside_the_game_get_zero_and_change_nobody():
    scores = -_scores((4, 7, 5), 6).abs()  # all negative: a zero-score stand-in would not be a null player here
    present = torch.tensor(
        [[1, 1, 0, 1, 0, 1, 1], [1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0]], dtype=torch.bool
    )  # (targets, N)
    junk = scores.masked_fill(~present[..., None], 5.0)  # absent players' scores must not matter
    phi = coverage_shapley(junk, player_mask=present)
    for j in range(4):
        keep = present[j]
        assert torch.equal(phi[j][~keep], torch.zeros(int((~keep).sum()), dtype=torch.float64))
        if keep.any():
            torch.testing.assert_close(phi[j][keep], coverage_shapley(scores[j][keep]), rtol=0, atol=1e-15)
    # Gradients reach only the players in the game.
    leaf = junk.clone().requires_grad_()
    coverage_shapley(leaf, player_mask=present).sum().backward()
    assert torch.equal(leaf.grad[~present], torch.zeros_like(leaf.grad[~present]))
    assert leaf.grad[present].abs().sum() > 0


def test_low_precision_is_computed_in_float32():
    scores = _scores((4, 6, 8), 7).float()
    low = scores.bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        phi = coverage_shapley(low)
    assert phi.dtype == torch.float32
    torch.testing.assert_close(phi, coverage_shapley(low.detach().float()), rtol=0, atol=0)
    phi.sum().backward()
    assert low.grad.dtype == torch.bfloat16 and torch.isfinite(low.grad.float()).all()


def test_rejects_a_vector():
    with pytest.raises(ValueError, match=r"expected scores \(\.\.\., N, T\)"):
        coverage_shapley(torch.zeros(5))


def test_benchmark_rows_time_the_closed_form_against_enumeration():
    from components.benchmarks.shapley import run_shapley_benchmark

    result = run_shapley_benchmark(
        ns=(4,),
        ks=(2,),
        seeds=(0,),
        repeats=2,
        loop_repeats=1,
        include_step=False,
        progress=False,
        coverage_ns=(6, 20),
        coverage_ts=(5,),
        coverage_exact_limit=6,
    )
    small, large = result["coverage_rows"]
    assert (small["n"], small["t"], large["n"]) == (6, 5, 20)
    assert small["closed_form_ms"] > 0 and small["brute_force_ms"] > 0
    assert small["speedup"] == pytest.approx(small["brute_force_ms"] / small["closed_form_ms"], rel=0.01)
    assert small["max_abs_diff"] < 1e-5  # float32: the same values by both routes
    assert large["closed_form_ms"] > 0 and large["brute_force_ms"] is None and large["max_abs_diff"] is None
