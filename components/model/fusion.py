"""Adaptive fusion (Shap-CA, Sec. 3.4): every text token reads the context tokens and the image patches through
cross-attention, and a per-token gate decides how much of each to add:

    a^c_i = CrossAttn(h_i, C),   g^c_i = sigmoid(w_c . [h_i; a^c_i] + b_c) * has_context
    a^v_i = CrossAttn(h_i, V),   g^v_i = sigmoid(w_v . [h_i; a^v_i] + b_v) * has_image
    h'_i  = h_i + g^c_i a^c_i + g^v_i a^v_i

h: text token states (B, T, d); C: context token states (B, T_c, d_c); V: image patch states (B, P, d_v), projected to
d first when their width differs. A sample without a context or an image has that gate closed (0), so h' = h there.

A gate that cannot close (the method's first hypothesis for why contexts do not help: every trained gate ends near 0,
docs/RESULTS.md): `model.context_gate_floor` f makes the context gate g^c = f + (1 - f) sigmoid(.), so a token always
takes at least f of its attended context; `model.context_gate_bias` starts b_c there (2.0: g^c about 0.88) instead of
near 0 (g^c about 0.5). Both leave the image gate as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


class GatedCrossAttention(nn.Module):
    """One source: cross-attention from the text tokens to the source's states, and its per-token gate."""

    def __init__(
        self, dim: int, source_dim: int, heads: int, dropout: float, floor: float = 0.0, bias: float | None = None
    ):
        super().__init__()
        if dim % heads:
            raise ValueError(f"model.fusion_heads = {heads} must divide the text encoder's hidden size {dim}")
        self.project = nn.Linear(source_dim, dim) if source_dim != dim else nn.Identity()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.gate = nn.Linear(2 * dim, 1)
        if bias is not None:
            nn.init.constant_(self.gate.bias, bias)  # after nn.Linear's own init: the same random draws as without
        self.floor = floor

    def forward(self, text: Tensor, source: Tensor, source_mask: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        """text (B, T, d), source (B, S, d_s), source_mask (B, S) True = real, present (B,)
        -> gated attended states g * a (B, T, d) and the gate g (B, T)."""
        source = self.project(source)  # (B, S, d)
        attended, _ = self.attn(text, source, source, key_padding_mask=~source_mask.bool(), need_weights=False)
        gate = torch.sigmoid(self.gate(torch.cat([text, attended], dim=-1)))  # (B, T, 1)
        if self.floor:
            gate = self.floor + (1 - self.floor) * gate  # in [floor, 1)
        gate = gate * present.to(gate.dtype)[:, None, None]  # a missing source closes the gate
        return gate * attended, gate.squeeze(-1)


@dataclass
class FusionOutput:
    states: Tensor  # (B, T, d) fused text token states
    context_gate: Tensor | None  # (B, T) g^c, None without a context branch
    image_gate: Tensor | None  # (B, T) g^v, None without an image branch


class AdaptiveFusion(nn.Module):
    def __init__(
        self,
        dim: int,
        context_dim: int | None,
        image_dim: int | None,
        heads: int,
        dropout: float,
        *,
        context_gate_floor: float = 0.0,
        context_gate_bias: float | None = None,
    ):
        super().__init__()
        self.context = (
            GatedCrossAttention(dim, context_dim, heads, dropout, context_gate_floor, context_gate_bias)
            if context_dim
            else None
        )
        self.image = GatedCrossAttention(dim, image_dim, heads, dropout) if image_dim else None
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        text: Tensor,  # (B, T, d)
        context: Tensor | None = None,  # (B, T_c, d_c)
        context_mask: Tensor | None = None,  # (B, T_c)
        has_context: Tensor | None = None,  # (B,) bool
        image: Tensor | None = None,  # (B, P, d_v)
        has_image: Tensor | None = None,  # (B,) bool
    ) -> FusionOutput:
        fused, context_gate, image_gate = text, None, None
        if self.context is not None and context is not None:
            added, context_gate = self.context(text, context, context_mask, has_context)
            fused = fused + self.dropout(added)
        if self.image is not None and image is not None:
            patch_mask = torch.ones(image.shape[:2], dtype=torch.bool, device=image.device)  # (B, P) all patches real
            added, image_gate = self.image(text, image, patch_mask, has_image)
            fused = fused + self.dropout(added)
        return FusionOutput(fused, context_gate, image_gate)
