"""Contrastive alignment of image contexts with texts and with images (Shap-CA, Luo et al. 2024, Sec. 3.3).

Pooled vectors are projected into one alignment space and L2-normalised: z_t (texts), z_c (contexts), z_v (images),
each (N, D). Two objectives, each over the samples of a mask A (the samples that have both inputs):

Shapley InfoNCE. phi = Shapley(players z_c, targets z_t) (N, N): phi[i, j] is how much context i adds to the batch's
overlap with text j (see shapley.py; the overlap is the value function, cosine of the sum by default). For every
target j the matching context should contribute most:

    L_{c->t} = -1/|A| sum_{j in A} log( exp(phi[j, j] / tau) / sum_{i in A} exp(phi[i, j] / tau) )

and the swapped game (texts as players, contexts as targets) gives L_{t->c}; L_ct = (L_{c->t} + L_{t->c}) / 2.
L_ci is the same with images in place of texts. Samples outside A enter the games as zero vectors: a zero vector is a
null player (phi = 0) and leaves every other player's value unchanged, so the game is exactly the game over A.

The token coverage game (``game="token_coverage"``, not additive in S; exact values in closed form, shapley.py). The
players cover the target's tokens: with u_{j,t} the unit projected state of token t of target j (padding and special
tokens left out), a_k(t) is how well player k covers it,

    pooled:  a_k(t) = u_{j,t} . z_k                   (z_k: player k's unit pooled vector)
    maxsim:  a_k(t) = max_s u_{j,t} . u_{k,s}         (best over player k's own real tokens)

and v_j(S) = mean_t max_{k in S} a_k(t), v_j({}) = 0. Redundant contexts share credit, and a context earns credit only
for the tokens it covers better than the others. phi[i, j] = coverage_shapley(a)[j, i]; both directions as above:
contexts cover a text's tokens (L_{c->t}), texts cover a context's tokens (L_{t->c}); with images, contexts cover an
image's patches and images cover a context's tokens. Samples outside A are left out of the game (a zero vector is
not a null player of a max game: its 0 would beat negative covers).

Plain InfoNCE (the "infonce" ablation): the same loss with logits z_c z_t^T / tau (CLIP's symmetric loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.model.shapley import ValueFn, coverage_shapley, exact_shapley, monte_carlo_shapley

Game = Literal["cosine_of_sum", "token_coverage"]
CoverageScores = Literal["pooled", "maxsim"]


def cosine_of_sum(members: Tensor, players: Tensor, targets: Tensor) -> Tensor:
    """v_j(S) = cos(s, y_j) with s = sum_{k in S} x_k = m X, from inner products only (no (..., d) tensor):

        s . y_j / |y_j| = m (X y^T)_j / |y_j|,    |s|^2 = m (X X^T) m^T.

    members (..., N) 0/1, players (N, d), targets (M, d) -> (..., M). A zero sum is worth 0.
    """
    dots = members @ (players @ F.normalize(targets, dim=-1).T)  # (..., M)
    squared_norm = ((members @ (players @ players.T)) * members).sum(dim=-1, keepdim=True)  # (..., 1)
    return dots / squared_norm.clamp_min(1e-24).sqrt()


DEFAULT_VALUE: ValueFn = cosine_of_sum


def _infonce_over_targets(scores: Tensor, mask: Tensor, tau: float) -> Tensor:
    """-mean_j log softmax_i(scores[i, j] / tau)[j] over targets j in mask, candidates i in mask. scores: (N, N)."""
    keep = mask.nonzero().squeeze(1)
    if len(keep) == 0:  # no sample has both inputs: nothing to align (0, but still part of the graph)
        return scores.sum() * 0.0
    logits = scores[keep][:, keep].T / tau  # (|A| targets, |A| candidates)
    return F.cross_entropy(logits, torch.arange(len(keep), device=scores.device))


def shapley_infonce(players: Tensor, targets: Tensor, mask: Tensor, tau: float, estimate) -> tuple[Tensor, Tensor]:
    """Symmetric InfoNCE over Shapley values. players, targets: (N, D); mask: (N,) bool; estimate(x, y) -> phi.

    Returns (loss, phi) with phi (N, N) the players-for-targets Shapley values (rows and columns outside mask are 0).
    """
    keep = mask.to(players.dtype)[:, None]  # (N, 1): outside the mask a sample becomes a null player
    players, targets = players * keep, targets * keep
    phi = estimate(players, targets)  # (N, N) player i for target j
    psi = estimate(targets, players)  # (N, N) the swapped game
    loss = (_infonce_over_targets(phi, mask, tau) + _infonce_over_targets(psi, mask, tau)) / 2
    return loss, phi


@dataclass
class Tokens:
    """Token-level states of one input, for the token coverage game."""

    states: Tensor  # (N, T, d)
    mask: Tensor  # (N, T) bool: the tokens that count (no padding, no special tokens)

    def __getitem__(self, rows: Tensor) -> Tokens:
        return Tokens(self.states[rows], self.mask[rows])


@dataclass
class Projected:
    """One input in the alignment space: unit pooled vectors, and unit token states where the game reads them."""

    pooled: Tensor  # (N, D)
    tokens: Tensor | None = None  # (N, T, D)
    mask: Tensor | None = None  # (N, T) bool


def coverage_scores(players: Projected, targets: Projected, kind: CoverageScores) -> Tensor:
    """a[j, k, t]: how well player k covers token t of target j (a cosine) -> (M, N, T). See the module docstring."""
    if targets.tokens is None:
        raise ValueError("the token coverage game needs the targets' token states (Projected.tokens)")
    if kind == "pooled":
        return torch.einsum("jtd,kd->jkt", targets.tokens, players.pooled)
    if players.tokens is None or players.mask is None:
        raise ValueError("MaxSim covers need the players' token states and mask (Projected.tokens, .mask)")
    sims = torch.einsum("jtd,ksd->jkts", targets.tokens, players.tokens)  # (M, N, T, S)
    return sims.masked_fill(~players.mask[None, :, None, :], -2.0).amax(dim=-1)  # -2: below every cosine


def _upcast(p: Projected, dtype: torch.dtype) -> Projected:
    return Projected(p.pooled.to(dtype), None if p.tokens is None else p.tokens.to(dtype), p.mask)


def coverage_game(players: Projected, targets: Projected, mask: Tensor, kind: CoverageScores) -> Tensor:
    """phi (N, M): exact Shapley value of player i for target j in the token coverage game over the samples in mask
    (N,) bool; rows and columns outside mask are 0. Cosines and values in float32 at least, as in shapley.py."""
    dtype = torch.float64 if players.pooled.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=players.pooled.device.type, enabled=False):
        players, targets = _upcast(players, dtype), _upcast(targets, dtype)
        scores = coverage_scores(players, targets, kind)  # (M, N, T)
        phi = coverage_shapley(scores, token_mask=targets.mask, player_mask=mask)  # (M, N)
        return phi.T * mask.to(dtype)[None, :]  # (N, M): targets outside mask get 0 too


def coverage_infonce(
    players: Projected, targets: Projected, mask: Tensor, tau: float, kind: CoverageScores
) -> tuple[Tensor, Tensor]:
    """Symmetric InfoNCE over the coverage game's Shapley values: (loss, phi (N, N) players for targets)."""
    phi = coverage_game(players, targets, mask, kind)  # (N, N) player i for target j
    psi = coverage_game(targets, players, mask, kind)  # (N, N) the swapped game
    loss = (_infonce_over_targets(phi, mask, tau) + _infonce_over_targets(psi, mask, tau)) / 2
    return loss, phi


def cosine_infonce(a: Tensor, b: Tensor, mask: Tensor, tau: float) -> Tensor:
    """CLIP's symmetric InfoNCE with logits cos(a_i, b_j) / tau, over the samples in mask."""
    sim = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T  # (N, N)
    return (_infonce_over_targets(sim, mask, tau) + _infonce_over_targets(sim.T, mask, tau)) / 2


@dataclass
class AlignmentOutput:
    loss_ct: Tensor  # context-text loss (unweighted); 0 when fewer than two samples have a context
    loss_ci: Tensor  # context-image loss (unweighted); 0 without images
    shapley_ct: Tensor | None  # (N, N) phi[i, j]: context i for text j; None for plain InfoNCE


class ContrastiveAlignment(nn.Module):
    """Projection heads into the alignment space plus the context-text and context-image losses."""

    def __init__(
        self,
        text_dim: int,
        context_dim: int,
        image_dim: int | None,
        align_dim: int,
        kind: Literal["infonce", "shapley"],
        estimator: Literal["exact", "monte_carlo"] = "monte_carlo",
        permutations: int = 64,
        temperature: float = 0.07,
        value_fn: ValueFn = DEFAULT_VALUE,
        game: Game = "cosine_of_sum",  # cosine_of_sum: the estimator over value_fn; token_coverage: exact, no estimator
        coverage: CoverageScores = "pooled",
    ):
        super().__init__()
        self.kind, self.temperature, self.game, self.coverage = kind, temperature, game, coverage
        self.proj_text = nn.Linear(text_dim, align_dim)
        self.proj_context = nn.Linear(context_dim, align_dim)
        self.proj_image = nn.Linear(image_dim, align_dim) if image_dim else None
        if estimator == "exact":
            self.estimate: partial[Tensor] = partial(exact_shapley, value_fn=value_fn)
        else:
            self.estimate = partial(monte_carlo_shapley, value_fn=value_fn, permutations=permutations)

    @property
    def uses_tokens(self) -> bool:
        """Whether forward needs token-level states (the token coverage game)."""
        return self.kind == "shapley" and self.game == "token_coverage"

    def project(self, proj: nn.Linear, pooled: Tensor, tokens: Tokens | None = None) -> Projected:
        """Pooled vectors (N, d) and, for the token coverage game, token states into the alignment space (unit)."""
        z = F.normalize(proj(pooled), dim=-1)  # (N, D)
        if not self.uses_tokens:
            return Projected(z)
        if tokens is None:
            raise ValueError(
                "model.shapley_game='token_coverage' needs token states: pass text_tokens, "
                "context_tokens (and image_tokens with images) to the alignment"
            )
        return Projected(z, F.normalize(proj(tokens.states), dim=-1), tokens.mask.bool())  # tokens (N, T, D)

    @property
    def permutations(self) -> int | None:
        """The Monte Carlo K of the Shapley estimator; None where values are exact (exact estimator, coverage game)."""
        return None if self.uses_tokens else self.estimate.keywords.get("permutations")

    def scores(
        self,
        players: Projected,
        targets: Projected,
        *,
        permutations: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """phi (N, M): the Shapley value of player i for target j in this alignment's game, over every sample.

        ``permutations`` and ``generator`` replace the Monte Carlo estimator's K and random source for this call
        (a probe's own seeded orders); with exact values there is no K, and passing one is a ValueError."""
        if permutations is not None and self.permutations is None:
            raise ValueError("permutations: this alignment computes exact Shapley values, there is no K to change")
        if self.uses_tokens:
            every = torch.ones(len(players.pooled), dtype=torch.bool, device=players.pooled.device)
            return coverage_game(players, targets, every, self.coverage)
        if self.permutations is None:
            return self.estimate(players.pooled, targets.pooled)
        return self.estimate(
            players.pooled, targets.pooled, permutations=permutations or self.permutations, generator=generator
        )

    def _loss(self, a: Projected, b: Projected, mask: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.kind == "infonce":
            return cosine_infonce(a.pooled, b.pooled, mask, self.temperature), None
        if self.game == "token_coverage":
            return coverage_infonce(a, b, mask, self.temperature, self.coverage)
        return shapley_infonce(a.pooled, b.pooled, mask, self.temperature, self.estimate)

    def forward(
        self,
        text: Tensor,  # (N, d_t) pooled text vectors
        context: Tensor,  # (N, d_c) pooled context vectors
        has_context: Tensor,  # (N,) bool
        image: Tensor | None = None,  # (N, d_v) pooled image vectors
        has_image: Tensor | None = None,  # (N,) bool
        *,
        text_tokens: Tokens | None = None,  # token_coverage only: (N, T, d_t) states and their mask
        context_tokens: Tokens | None = None,  # (N, T_c, d_c)
        image_tokens: Tokens | None = None,  # (N, P, d_v) patches
    ) -> AlignmentOutput:
        t = self.project(self.proj_text, text, text_tokens)
        c = self.project(self.proj_context, context, context_tokens)
        loss_ct, phi = self._loss(c, t, has_context)
        if image is None or self.proj_image is None or has_image is None:
            loss_ci = loss_ct.new_zeros(())
        else:
            v = self.project(self.proj_image, image, image_tokens)
            loss_ci, _ = self._loss(c, v, has_context & has_image)
        return AlignmentOutput(loss_ct=loss_ct, loss_ci=loss_ci, shapley_ct=None if phi is None else phi.detach())
