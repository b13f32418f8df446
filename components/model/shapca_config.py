"""Typed configuration of a Shap-CA model: everything `ShapCA.from_config` needs, nothing about training.

The defaults are the embedded default recipe (configs/default.yaml writes the same values out; a test keeps them
equal), chosen on Twitter-2017 dev (docs/RESULTS.md, docs/research/recipe-probe.md) where a comment says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from components.model.packaged_encoders import MINILM
from components.model.word_features import WordFeatureKind


class ShapCAConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Encoders: a local directory (never a hub id), or a packaged encoder (packaged_encoders.py): "minilm", the
    # MiniLM-L6 default, or "mpnet", all-mpnet-base-v2 (after `make setup-mpnet`).
    text_encoder: str = MINILM
    context_encoder: str | None = None  # None: contexts share the text encoder's weights
    # k: contexts get their own copy of the encoder (of context_encoder, if set) with only the top k layers trained
    # and the rest frozen, its output computed once per context and cached (context_cache.py; fusion mode only).
    # None: the context encoder trains whole, as the text encoder does. Other context modes have no context encoder of
    # their own and ignore it, so `model.context_mode=none` works on top of a config that sets it. 1: a step costs
    # 1.09x text only instead of 1.69x with the context encoder trained whole (docs/PERFORMANCE.md).
    context_trainable_layers: int | None = Field(1, ge=0)
    context_cache_entries: int = Field(8192, ge=0)  # contexts the frozen part's cache holds (0: no cache)
    image_encoder: Path | None = None  # a local HF vision model (CLIP vision, ViT, SigLIP); None: no images
    max_text_tokens: int = 128
    max_context_tokens: int = 96

    # Ablation switches.
    context_mode: Literal["none", "concat", "fusion"] = "fusion"
    # infonce: plain InfoNCE over cosines; shapley: InfoNCE over Shapley values (the paper). Plain InfoNCE won dev
    # (83.27 ± 0.49, 3 seeds) by 0.02-0.07 F1 over the token coverage games, far inside the seed spread; the paper's
    # cosine-of-sum game came last of the aligned variants (82.32 ± 0.09).
    alignment: Literal["none", "infonce", "shapley"] = "infonce"
    estimator: Literal["exact", "monte_carlo"] = "monte_carlo"
    permutations: int = Field(64, ge=1)  # K, Monte Carlo only; each is paired with its reverse (antithetic): 2K orders
    # The Shapley game (alignment=shapley): cosine_of_sum is the paper's v_j(S) = cos(sum_S z_c, z_t[j]) (estimator,
    # permutations apply); token_coverage is v_j(S) = mean_t max_{k in S} a_k(t), exact in closed form (alignment.py).
    shapley_game: Literal["cosine_of_sum", "token_coverage"] = "cosine_of_sum"
    coverage_scores: Literal["pooled", "maxsim"] = "pooled"  # a_k(t): cos with k's pooled vector | best over k's tokens

    # Alignment space and loss.
    align_dim: int = 256
    temperature: float = Field(0.07, gt=0)  # tau of the InfoNCE over Shapley values
    lambda_ct: float = 0.1  # weight of the context-text alignment loss
    lambda_ci: float = 0.1  # weight of the context-image alignment loss

    # Word features (word_features.py): each word's surface form (case, @, #, URLs, digits), which the uncased
    # encoders lose, as a character CNN over its bytes and/or a word-shape class, added at its first sub-token: into
    # the encoder's input embeddings (every head reads it) or its output states (the fusion and the taggers read it;
    # the RE head reads only its marker tokens' states, so for RE only "embeddings" reaches it). The default, a
    # character CNN at the states, won dev on Twitter-2017 (3 seeds, docs/RESULTS.md: 83.44 vs 83.27 without, inside
    # the seed spread; at the embeddings, trained at lr_head, it lost 2 dev F1) for 8 % more wall time.
    word_features: WordFeatureKind = "chars"
    word_features_at: Literal["embeddings", "states"] = "states"

    # Fusion and the task head.
    fusion_heads: int = 4
    # The context gate g^c (fusion.py): g = floor + (1 - floor) * sigmoid(.), so it cannot close below the floor; and
    # its bias's initial value (None: nn.Linear's own init, g about 0.5; 2.0: g about 0.88, open at the start).
    context_gate_floor: float = Field(0.0, ge=0.0, lt=1.0)
    context_gate_bias: float | None = None
    dropout: float = 0.1
    # The task head's own settings, as its task defines them (`settings` in components/tasks/<task>/task.py); the
    # experiment config fills in their defaults for its dataset's task.
    head: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _alignment_needs_contexts(self) -> ShapCAConfig:
        if self.alignment != "none" and self.context_mode == "none":
            raise ValueError(
                f"model.alignment={self.alignment!r} aligns contexts with texts and images, but model.context_mode="
                "'none' reads no contexts: set model.alignment=none too"
            )
        return self
