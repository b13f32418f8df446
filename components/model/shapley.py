"""Shapley values of the alignment games, for many targets at once: a game on sums of embedding vectors (estimated),
and a token coverage game (exact, closed form).

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

The token coverage game (``coverage_shapley``, not additive in S). Players k = 1..N each cover the T tokens of one
target with scores a_k(t) (for example the cosine of token t with player k's vector); a coalition is worth the mean
over tokens of its best cover:

    v(S) = mean_t max_{k in S} a_k(t),        v({}) = 0.

Its exact Shapley values have a closed form. For one token sort the scores ascending, a_(1) <= ... <= a_(N), and put
a_(0) = 0 (= v({})). The player of rank i gets

    phi_(i) = sum_{m=1..i} ( a_(m) - a_(m-1) ) / (N - m + 1),

and a player's value in the game is the mean of its per-token values (Shapley values are linear in the game, and v is
the mean of the per-token games). Why: with u_m(S) = [S holds a player of rank >= m],

    max_{k in S} a_k = sum_{m=1..N} ( a_(m) - a_(m-1) ) u_m(S)     for every S ({}: every u_m is 0; otherwise the terms
                                                                    up to S's best rank r telescope to a_(r) - a_(0)),

and in u_m (the dual of the unanimity game of the players of rank >= m) those N - m + 1 players are symmetric, the
others are null players, and u_m(all) = 1, so each of them gets 1 / (N - m + 1). Ties are harmless: a step between
tied players is 0, so they get equal values whatever order the sort puts them in. Efficiency: sum_i phi_(i) = a_(N) =
v(all). Cost O(N log N) per token, exact, differentiable through the sorted scores (the sort only picks the order; the
values are gathered from the scores).

Negative scores (cosines can be) are used as given, not clipped: a_(0) = 0 is v({}), not a floor. The first step
a_(1) - 0 weighs u_1 ("S is not empty", shared by all N players) and is negative when the lowest score is. When
every score of a token is negative, v(S) = max_{k in S} a_k < 0 for every non-empty S, the values sum to a_(N) < 0,
and a player can still get phi > 0: N = 2, a = (-0.5, -0.1) gives phi = (-0.25, 0.15), since player 2 joining {} adds
-0.1 and joining {1} lifts the best cover from -0.5 to -0.1 (+0.4).

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


def coverage_shapley(scores: Tensor, token_mask: Tensor | None = None, player_mask: Tensor | None = None) -> Tensor:
    """Exact Shapley values (..., N) of the token coverage game v(S) = mean_t max_{k in S} scores[..., k, t], v({}) = 0.

    scores (..., N, T): scores[..., k, t] = a_k(t). token_mask (..., T) bool: the tokens the mean runs over (padding
    left out; a target without tokens is worth 0 to everybody). player_mask (..., N) bool: the players in the game;
    the others are not in it at all (they get 0 and change nobody's value). Masks broadcast; None means all.
    """
    if scores.ndim < 2:
        raise ValueError(f"expected scores (..., N, T), got {tuple(scores.shape)}")
    a = scores.to(torch.float64 if scores.dtype == torch.float64 else torch.float32)
    n = a.shape[-2]
    with torch.autocast(device_type=a.device.type, enabled=False):
        present = torch.ones(a.shape[:-1], dtype=torch.bool, device=a.device)  # (..., N)
        if player_mask is not None:
            present = present & player_mask.to(torch.bool)
        present = present[..., None].expand(a.shape)  # (..., N, T)
        # Players outside the game sort first and are zeroed: their steps are 0, and the first player in the game
        # at sorted position p steps up from a_(0) = 0, shared by the N - p + 1 players from p on, all in the game.
        order = a.detach().masked_fill(~present, -math.inf).argsort(dim=-2)  # (..., N, T) player of rank r + 1
        ranked = a.gather(-2, order) * present.gather(-2, order)  # (..., N, T) a_(1) <= ... <= a_(N)
        steps = ranked.diff(dim=-2, prepend=torch.zeros_like(ranked[..., :1, :]))  # a_(m) - a_(m-1), a_(0) = 0
        sharers = torch.arange(n, 0, -1, device=a.device, dtype=a.dtype)[:, None]  # (N, 1): N - m + 1
        per_rank = (steps / sharers).cumsum(dim=-2)  # (..., N, T) phi_(i) per token
        per_player = torch.zeros_like(per_rank).scatter(-2, order, per_rank)  # back to player order
        if token_mask is None:
            return per_player.mean(dim=-1)
        weights = torch.broadcast_to(token_mask, a.shape[:-2] + a.shape[-1:]).to(a.dtype)[..., None, :]  # (..., 1, T)
        return (per_player * weights).sum(dim=-1) / weights.sum(dim=-1).clamp_min(1.0)  # (..., N)
