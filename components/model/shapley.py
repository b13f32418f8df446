"""Shapley values of a game whose players are embedding vectors, for many targets at once.

The game (Shap-CA, Luo et al. 2024). Players are N vectors x_1..x_N (rows of ``players``, (N, d)); there are M
targets y_1..y_M (rows of ``targets``, (M, d)). A coalition S is worth, for target j, an overlap of its sum with y_j:

    v_j(S) = f( sum_{k in S} x_k , y_j ),        v_j({}) = 0,

with f the cosine by default (``alignment.cosine_of_sum``). A value function receives coalitions as 0/1 membership
rows m (..., N), so that the coalition sum is m X, and returns v (..., M); it may use that linearity (the cosine needs
only m (X y^T) and m (X X^T) m^T, never a (..., d) tensor). The Shapley value of player i for target j is its average
marginal contribution

    phi[i, j] = sum_{S subset of N without i} |S|! (N - |S| - 1)! / N! * ( v_j(S + i) - v_j(S) )
              = E_pi [ v_j(B_i(pi) + i) - v_j(B_i(pi)) ]      B_i(pi): the players before i in a uniform random order pi

and it is efficient: sum_i phi[i, j] = v_j(all players).

Estimators (both return (N, M) and are differentiable w.r.t. ``players`` and ``targets``):

- ``exact_shapley``: enumerates the 2^N coalitions as a 0/1 matrix A (2^N, N) and scores them all with one call of
  the value function. Collecting the terms of the sum by coalition T gives one more product:
      phi = C^T V,   C[T, i] = w(|T| - 1) if i in T else -w(|T|),   w(s) = s! (N - s - 1)! / N!,   V[T, j] = v_j(T).
  N <= 16.
- ``monte_carlo_shapley``: K random orders shared by all targets, each paired with its reverse (antithetic, 2K orders
  in all). Along an order the prefixes are the coalitions B_i(pi) + i; their membership rows P[p, t] (the first t + 1
  players of order p) give the prefix sums P X, so one call of the value function scores every prefix of every order
  against all M targets with matrix products, and differences of consecutive prefix values are the marginal
  contributions. Every order telescopes to v_j(all), so efficiency holds exactly for any K. With the cosine the cost
  is O(K N^2 (N + M) + N d (N + M)).

Precision: bf16/fp16 inputs are promoted to float32 (float64 stays float64) and autocast is switched off inside, since
long sums and small differences of cosines are what low precision gets wrong. The result has that dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

# v(members (..., N) 0/1 coalition rows, players (N, d), targets (M, d)) -> values (..., M)
ValueFn = Callable[[Tensor, Tensor, Tensor], Tensor]

MAX_EXACT_PLAYERS = 16  # 2^16 coalitions


def _promote(players: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    if players.ndim != 2 or targets.ndim != 2 or players.shape[1] != targets.shape[1]:
        raise ValueError(
            f"expected players (N, d) and targets (M, d), got {tuple(players.shape)} and {tuple(targets.shape)}"
        )
    dtype = torch.float64 if torch.float64 in (players.dtype, targets.dtype) else torch.float32
    return players.to(dtype), targets.to(dtype)


def shapley_weights(n: int, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
    """w(s) = s! (n - s - 1)! / n! for s = 0..n-1, computed in log space so that large n does not overflow."""
    s = torch.arange(n, dtype=torch.float64)
    log_w = torch.lgamma(s + 1) + torch.lgamma(n - s) - math.lgamma(n + 1)
    return log_w.exp().to(dtype=dtype, device=device)


def exact_shapley(players: Tensor, targets: Tensor, value_fn: ValueFn) -> Tensor:
    """Exact Shapley values phi (N, M) by enumerating all 2^N coalitions; N <= 16."""
    n = players.shape[0]
    if not 1 <= n <= MAX_EXACT_PLAYERS:
        raise ValueError(f"exact Shapley values enumerate 2^N coalitions: N must be in 1..{MAX_EXACT_PLAYERS}, got {n}")
    x, y = _promote(players, targets)
    with torch.autocast(device_type=x.device.type, enabled=False):
        codes = torch.arange(2**n, device=x.device)
        member = ((codes[:, None] >> torch.arange(n, device=x.device)) & 1).to(x.dtype)  # (2^N, N) A[T, i] = i in T
        size = member.sum(dim=1).long()  # (2^N,) |T|
        values = value_fn(member, x, y)  # (2^N, M) v_j(T)
        values = values * (size > 0).to(x.dtype)[:, None]  # v_j({}) = 0 whatever f says about an empty sum
        w = shapley_weights(n, x.dtype, x.device)
        w_with = w[(size - 1).clamp(min=0)][:, None]  # T = S + i is weighted w(|S|) = w(|T| - 1)
        w_without = w[size.clamp(max=n - 1)][:, None]  # T = S without i is weighted w(|T|)
        coef = member * w_with - (1 - member) * w_without  # (2^N, N)
        return coef.T @ values  # (N, M)


def random_orders(k: int, n: int, generator: torch.Generator | None = None, antithetic: bool = True) -> Tensor:
    """(2K, N) player orders: K uniform random permutations, then their reverses (just the K if not antithetic)."""
    if k < 1:
        raise ValueError(f"the number of permutations K must be >= 1, got {k}")
    device = generator.device if generator is not None else "cpu"
    orders = torch.rand(k, n, generator=generator, device=device).argsort(dim=1)  # (K, N)
    return torch.cat([orders, orders.flip(1)]) if antithetic else orders


def shapley_from_orders(players: Tensor, targets: Tensor, orders: Tensor, value_fn: ValueFn) -> Tensor:
    """Average marginal contribution of each player over the given orders (P, N): phi (N, M), vectorised."""
    x, y = _promote(players, targets)
    orders = orders.to(x.device)
    n = orders.shape[1]
    with torch.autocast(device_type=x.device.type, enabled=False):
        position = orders.argsort(dim=1)  # (P, N): position[p, i] = where player i stands in order p
        steps = torch.arange(n, device=x.device)
        prefix = (position[:, None, :] <= steps[None, :, None]).to(x.dtype)  # (P, N, N): is i among the first t + 1
        values = value_fn(prefix, x, y)  # (P, N, M): value of every prefix sum prefix @ x
        gains = values.diff(dim=1, prepend=values.new_zeros(values.shape[0], 1, values.shape[2]))  # (P, N, M)
        # gains[p, t] belongs to player orders[p, t]: read it back per player through the inverse permutation.
        per_player = gains.gather(1, position[:, :, None].expand(-1, -1, gains.shape[2]))  # (P, N, M)
        return per_player.mean(dim=0)  # (N, M)


def monte_carlo_shapley(
    players: Tensor,
    targets: Tensor,
    value_fn: ValueFn,
    permutations: int = 64,
    generator: torch.Generator | None = None,
    antithetic: bool = True,
) -> Tensor:
    """Monte Carlo Shapley values phi (N, M) from K shared random orders (and their reverses)."""
    orders = random_orders(permutations, players.shape[0], generator, antithetic)
    return shapley_from_orders(players, targets, orders, value_fn)
