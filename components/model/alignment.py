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

Plain InfoNCE (the "infonce" ablation): the same loss with logits z_c z_t^T / tau (CLIP's symmetric loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.model.shapley import ValueFn, exact_shapley, monte_carlo_shapley


def cosine_of_sum(members: Tensor, players: Tensor, targets: Tensor) -> Tensor:
    """v_j(S) = cos(s, y_j) with s = sum_{k in S} x_k = m X, from inner products only (no (..., d) tensor):

        s . y_j / |y_j| = m (X y^T)_j / |y_j|,    |s|^2 = m (X X^T) m^T.

    members (..., N) 0/1, players (N, d), targets (M, d) -> (..., M). A zero sum is worth 0.
    """
    dots = members @ (players @ F.normalize(targets, dim=-1).T)  # (..., M)
    squared_norm = ((members @ (players @ players.T)) * members).sum(dim=-1, keepdim=True)  # (..., 1)
    return dots / squared_norm.clamp_min(1e-24).sqrt()


def of_sum(overlap) -> ValueFn:
    """Any overlap(sums (..., d), targets (M, d)) -> (..., M) as a value function; it materialises the sums."""
    return lambda members, players, targets: overlap(members @ players, targets)


DEFAULT_VALUE: ValueFn = cosine_of_sum  # another overlap measure is one line: of_sum(my_overlap)


def _infonce_over_targets(scores: Tensor, mask: Tensor, tau: float) -> Tensor:
    """-mean_j log softmax_i(scores[i, j] / tau)[j] over targets j in mask, candidates i in mask. scores: (N, N)."""
    keep = mask.nonzero().squeeze(1)
    if len(keep) == 0:  # no sample has both inputs: nothing to align (0, but still part of the graph)
        return scores.sum() * 0.0
    logits = scores[keep][:, keep].T / tau  # (|A| targets, |A| candidates)
    return F.cross_entropy(logits, torch.arange(len(keep), device=scores.device))


def shapley_infonce(
    players: Tensor, targets: Tensor, mask: Tensor, tau: float, estimate
) -> tuple[Tensor, Tensor]:
    """Symmetric InfoNCE over Shapley values. players, targets: (N, D); mask: (N,) bool; estimate(x, y) -> phi.

    Returns (loss, phi) with phi (N, N) the players-for-targets Shapley values (rows and columns outside mask are 0).
    """
    keep = mask.to(players.dtype)[:, None]  # (N, 1): outside the mask a sample becomes a null player
    players, targets = players * keep, targets * keep
    phi = estimate(players, targets)  # (N, N) player i for target j
    psi = estimate(targets, players)  # (N, N) the swapped game
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
    ):
        super().__init__()
        self.kind, self.temperature = kind, temperature
        self.proj_text = nn.Linear(text_dim, align_dim)
        self.proj_context = nn.Linear(context_dim, align_dim)
        self.proj_image = nn.Linear(image_dim, align_dim) if image_dim else None
        if estimator == "exact":
            self.estimate = partial(exact_shapley, value_fn=value_fn)
        else:
            self.estimate = partial(monte_carlo_shapley, value_fn=value_fn, permutations=permutations)

    def _loss(self, a: Tensor, b: Tensor, mask: Tensor) -> tuple[Tensor, Tensor | None]:
        if self.kind == "shapley":
            return shapley_infonce(a, b, mask, self.temperature, self.estimate)
        return cosine_infonce(a, b, mask, self.temperature), None

    def forward(
        self,
        text: Tensor,  # (N, d_t) pooled text vectors
        context: Tensor,  # (N, d_c) pooled context vectors
        has_context: Tensor,  # (N,) bool
        image: Tensor | None = None,  # (N, d_v) pooled image vectors
        has_image: Tensor | None = None,  # (N,) bool
    ) -> AlignmentOutput:
        z_t = F.normalize(self.proj_text(text), dim=-1)  # (N, D)
        z_c = F.normalize(self.proj_context(context), dim=-1)  # (N, D)
        loss_ct, phi = self._loss(z_c, z_t, has_context)
        if image is None or self.proj_image is None or has_image is None:
            loss_ci = loss_ct.new_zeros(())
        else:
            z_v = F.normalize(self.proj_image(image), dim=-1)  # (N, D)
            loss_ci, _ = self._loss(z_c, z_v, has_context & has_image)
        return AlignmentOutput(loss_ct=loss_ct, loss_ci=loss_ci, shapley_ct=None if phi is None else phi.detach())
