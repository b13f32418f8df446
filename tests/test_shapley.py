"""The Shapley estimators: the axioms, agreement with an independent brute force, Monte Carlo convergence, gradients,
precision and devices."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from components.benchmarks.shapley import loop_shapley
from components.model.alignment import cosine_of_sum
from components.model.shapley import (
    MAX_EXACT_PLAYERS,
    exact_shapley,
    monte_carlo_shapley,
    random_orders,
    shapley_from_orders,
    shapley_weights,
)

torch.set_num_threads(2)


def _vectors(n: int, d: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _plain_cosine(a: list[float], b: list[float]) -> float:
    norm_a, norm_b = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
    return 0.0 if norm_a == 0 or norm_b == 0 else sum(x * y for x, y in zip(a, b, strict=False)) / (norm_a * norm_b)


def _brute_force(players: list[list[float]], targets: list[list[float]]) -> list[list[float]]:
    """The definition, in plain Python: every coalition S without i, weight |S|!(N-|S|-1)!/N!, v = cos(sum, target)."""
    n, d = len(players), len(players[0])

    def value(coalition: tuple[int, ...], target: list[float]) -> float:
        if not coalition:
            return 0.0
        total = [sum(players[k][c] for k in coalition) for c in range(d)]
        return _plain_cosine(total, target)

    phi = [[0.0] * len(targets) for _ in range(n)]
    for i in range(n):
        others = [k for k in range(n) if k != i]
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for coalition in itertools.combinations(others, size):
                for j, target in enumerate(targets):
                    phi[i][j] += weight * (value(tuple(sorted(coalition + (i,))), target) - value(coalition, target))
    return phi


def test_exact_matches_plain_python_brute_force():
    players, targets = _vectors(6, 5, 0), _vectors(3, 5, 1)
    expected = torch.tensor(_brute_force(players.tolist(), targets.tolist()), dtype=torch.float64)
    torch.testing.assert_close(exact_shapley(players, targets, cosine_of_sum), expected, rtol=0, atol=1e-12)


def test_weights_of_each_player_sum_to_one():
    for n in (1, 2, 7, 16, 64):
        w = shapley_weights(n)
        total = sum(math.comb(n - 1, s) * float(w[s]) for s in range(n))  # every coalition without i, once
        assert total == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("estimator", ["exact", "monte_carlo"])
def test_efficiency_values_sum_to_the_grand_coalition(estimator):
    players, targets = _vectors(9, 6, 2), _vectors(9, 6, 3)
    if estimator == "exact":
        phi = exact_shapley(players, targets, cosine_of_sum)
    else:  # every order telescopes to v(all), so efficiency holds for any K
        phi = monte_carlo_shapley(players, targets, cosine_of_sum, 3, generator=torch.Generator().manual_seed(0))
    grand = F.cosine_similarity(players.sum(0, keepdim=True), targets)  # v_j(all players)
    torch.testing.assert_close(phi.sum(dim=0), grand, rtol=0, atol=1e-12)


def test_symmetric_players_get_equal_values():
    players, targets = _vectors(7, 5, 4), _vectors(4, 5, 5)
    players[4] = players[1]  # players 1 and 4 are interchangeable in every coalition
    phi = exact_shapley(players, targets, cosine_of_sum)
    torch.testing.assert_close(phi[1], phi[4], rtol=0, atol=1e-12)
    assert not torch.allclose(phi[1], phi[2])  # and the game is not trivial


@pytest.mark.parametrize("estimator", ["exact", "monte_carlo"])
def test_null_player_gets_zero(estimator):
    players, targets = _vectors(8, 5, 6), _vectors(5, 5, 7)
    players[3] = 0.0  # adds nothing to any coalition
    if estimator == "exact":
        phi = exact_shapley(players, targets, cosine_of_sum)
    else:
        phi = monte_carlo_shapley(players, targets, cosine_of_sum, 16, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(phi[3], torch.zeros(5, dtype=phi.dtype), rtol=0, atol=1e-15)  # rounding only
    assert phi.abs().sum() > 0.1


def test_monte_carlo_converges_to_exact():
    """Mean relative L2 error over 4 seeds shrinks like 1/sqrt(K); at K = 4096 (8192 orders) it is below 1%."""
    players, targets = _vectors(10, 8, 8), _vectors(10, 8, 9)
    exact = exact_shapley(players, targets, cosine_of_sum)

    def error(k: int) -> float:
        errors = []
        for seed in range(4):
            g = torch.Generator().manual_seed(seed)
            estimate = monte_carlo_shapley(players, targets, cosine_of_sum, k, generator=g)
            errors.append(float((estimate - exact).norm() / exact.norm()))
        return sum(errors) / len(errors)

    e16, e256, e4096 = error(16), error(256), error(4096)
    assert e16 > e256 > e4096
    assert e4096 < 0.01
    assert e4096 < e16 / 8  # 1/sqrt(256) = 1/16 in theory; allow a factor of 2 for the seeds' luck


def test_orders_are_permutations_paired_with_their_reverses():
    orders = random_orders(5, 9, torch.Generator().manual_seed(0))
    assert orders.shape == (10, 9)
    assert all(sorted(row) == list(range(9)) for row in orders.tolist())
    assert torch.equal(orders[5:], orders[:5].flip(1))
    assert len({tuple(row) for row in orders[:5].tolist()}) == 5


def test_vectorised_estimator_equals_the_python_loop_on_the_same_orders():
    players, targets = _vectors(11, 7, 10), _vectors(6, 7, 11)
    orders = random_orders(4, 11, torch.Generator().manual_seed(2))
    torch.testing.assert_close(
        shapley_from_orders(players, targets, orders, cosine_of_sum),
        loop_shapley(players, targets, orders),
        rtol=0,
        atol=1e-12,
    )


def test_gradcheck_exact():
    players = _vectors(4, 3, 12).requires_grad_()
    targets = _vectors(3, 3, 13).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: exact_shapley(x, y, cosine_of_sum), (players, targets))


def test_gradcheck_monte_carlo():
    players = _vectors(5, 3, 14).requires_grad_()
    targets = _vectors(4, 3, 15).requires_grad_()
    orders = random_orders(3, 5, torch.Generator().manual_seed(3))  # fixed orders: a deterministic function
    assert torch.autograd.gradcheck(lambda x, y: shapley_from_orders(x, y, orders, cosine_of_sum), (players, targets))


def test_bf16_inputs_are_computed_in_float32():
    players, targets = _vectors(12, 16, 16, torch.float32), _vectors(12, 16, 17, torch.float32)
    low = players.bfloat16().requires_grad_()
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as under the trainer's bf16 autocast
        phi = monte_carlo_shapley(low, targets.bfloat16(), cosine_of_sum, 8, generator=g())
    assert phi.dtype == torch.float32
    reference = monte_carlo_shapley(low.detach().float(), targets.bfloat16().float(), cosine_of_sum, 8, generator=g())
    torch.testing.assert_close(phi, reference, rtol=0, atol=1e-6)
    phi.sum().backward()
    assert low.grad is not None and low.grad.dtype == torch.bfloat16 and torch.isfinite(low.grad.float()).all()


def test_exact_refuses_too_many_players():
    with pytest.raises(ValueError, match="N must be in 1..16"):
        exact_shapley(_vectors(MAX_EXACT_PLAYERS + 1, 2, 0), _vectors(2, 2, 1), cosine_of_sum)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    players, targets = _vectors(32, 64, 18, torch.float32), _vectors(32, 64, 19, torch.float32)
    orders = random_orders(16, 32, torch.Generator().manual_seed(5))
    cpu = shapley_from_orders(players.to(dtype), targets.to(dtype), orders, cosine_of_sum)
    x = players.to("cuda", dtype).requires_grad_()
    gpu = shapley_from_orders(x, targets.to("cuda", dtype), orders, cosine_of_sum)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)
    gpu.sum().backward()
    assert torch.isfinite(x.grad.float()).all()
