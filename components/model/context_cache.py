"""A context encoder whose bottom is frozen and cached: model.context_trainable_layers = k.

The contexts are fixed text, so the bottom of their encoder need not run (or train) in every step. The context
encoder becomes a separate copy of the encoder, split at layer L - k (L layers):

    context ids (B, T_c) --embeddings + layer[0 : L-k]--> S (B, T_c, d)   frozen: eval mode, no_grad, not optimized;
                                                                          each context's S computed once, cached
    S --layer[L-k : L]--> C (B, T_c, d)                                   trained: the top k layers (k=0: none)

The cache lives here, in the module, because only the module knows what its frozen part computes: it is keyed by a
context's token ids (padding removed), so it needs nothing from the data layer, and a run over the same context set
hits it from the second epoch on. It is not part of the state dict (save/load see the encoder's weights only), is
emptied on load_state_dict, and is only written outside torch.inference_mode (an inference tensor cannot be saved for
backward by a later training step). It holds at most `max_entries` contexts, least recently used dropped first; an
entry is (n_i, d) fp32 for a context of n_i tokens: at MiniLM's d = 384 and the default 96 context tokens, at most
147 KB, so the default 8192 entries bound it at 1.2 GB (about 0.4 GB at a tweet context's ~30 tokens).

k = 0 runs the whole encoder frozen (any architecture); k > 0 needs the layers run one by one (embeddings +
encoder.layer[i]), which BERT and MPNet allow (MPNet's layers also take the relative position bias its encoder computes
once per forward).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers.masking_utils import create_bidirectional_mask

from components.model.encoders import HFModel

LAYERED_MODEL_TYPES = ("bert", "mpnet")  # embeddings + encoder.layer[i], each layer(hidden, attention_mask, ...)


@dataclass
class ContextStates:
    last_hidden_state: Tensor  # (B, T_c, d); zeros at padding when the states came from the cache


class CachedContextEncoder(nn.Module):
    def __init__(self, encoder: HFModel, trainable_layers: int, max_entries: int):
        super().__init__()
        self.encoder, self.trainable_layers, self.max_entries = encoder, trainable_layers, max_entries
        self.config = encoder.config  # hidden_size, and save_pretrained writes it as the context encoder's config
        layers = getattr(getattr(encoder, "encoder", None), "layer", None)
        if trainable_layers > 0:
            if encoder.config.model_type not in LAYERED_MODEL_TYPES or layers is None:
                raise ValueError(
                    f"model.context_trainable_layers={trainable_layers} needs an encoder whose layers run one by one "
                    f"({', '.join(LAYERED_MODEL_TYPES)}), got {encoder.config.model_type!r}; "
                    "use 0 (fully frozen) or None"
                )
            if trainable_layers > len(layers):
                raise ValueError(
                    f"model.context_trainable_layers={trainable_layers} exceeds the encoder's {len(layers)} layers"
                )
        # Layers below the split (and the embeddings) are frozen; split None: the whole encoder (k = 0).
        self.split = len(layers) - trainable_layers if trainable_layers > 0 and layers is not None else None
        for p in encoder.parameters():  # the pooler too: it never runs
            p.requires_grad_(False)
        for layer in self._top():
            layer.requires_grad_(True)
        self.cache: OrderedDict[tuple[int, ...], Tensor] = OrderedDict()  # ids -> S (n_i, d); not in the state dict
        self.hits = self.misses = 0

    def _top(self) -> list[nn.Module]:
        return [] if self.split is None else list(self.encoder.encoder.layer[self.split :])

    def _frozen(self) -> list[nn.Module]:
        if self.split is None:
            return [self.encoder]
        return [self.encoder.embeddings, *self.encoder.encoder.layer[: self.split]]

    def _load_from_state_dict(self, *args, **kwargs):
        self.cache.clear()  # new weights: the cached states are stale
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, *args, **kwargs):
        self.cache.clear()  # .to(device/dtype): entries would sit on the old device
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True) -> CachedContextEncoder:
        super().train(mode)
        for module in self._frozen():
            module.eval()  # no dropout below the split: the cached states are a function of the ids alone
        return self

    def _run_layers(self, layers: list[nn.Module], hidden: Tensor, attention_mask: Tensor) -> Tensor:
        """hidden (B, T_c, d) through `layers` as the encoder's own forward would run them."""
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask)
        extra = {}
        if (
            self.config.model_type == "mpnet"
        ):  # relative position bias: a function of the length only, as in MPNetEncoder
            extra["position_bias"] = self.encoder.encoder.compute_position_bias(hidden)
        for layer in layers:
            out = layer(hidden, mask, **extra)
            hidden = out[0] if isinstance(out, tuple) else out  # MPNet's layers return (hidden, ...), BERT's hidden
        return hidden

    @torch.no_grad()
    def frozen_states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """S (B, T_c, d): the frozen part on a batch, uncached."""
        if self.split is None:
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        hidden = self.encoder.embeddings(input_ids=input_ids)  # (B, T_c, d)
        return self._run_layers(list(self.encoder.encoder.layer[: self.split]), hidden, attention_mask)

    def cached_states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """S (B, T_c, d) from the cache, the missing contexts computed (as one sub-batch) and stored first."""
        lengths = attention_mask.sum(dim=1).tolist()  # n_i: contexts are right-padded
        keys = [tuple(ids[:n].tolist()) for ids, n in zip(input_ids, lengths, strict=False)]
        missing = [i for i, key in enumerate(keys) if key not in self.cache]
        found: dict[tuple[int, ...], Tensor] = {}
        if missing:
            rows = torch.tensor(missing, device=input_ids.device)
            computed = self.frozen_states(input_ids[rows], attention_mask[rows])  # (M, T_c, d)
            for row, states in zip(missing, computed, strict=False):
                found[keys[row]] = states[: lengths[row]].clone()  # (n_i, d)
        self.hits, self.misses = self.hits + len(keys) - len(missing), self.misses + len(missing)
        rows_states = []
        for key in keys:
            if key not in found:
                self.cache.move_to_end(key)  # least recently used goes first
            rows_states.append(found[key] if key in found else self.cache[key])
        first = rows_states[0]
        out = first.new_zeros(len(keys), input_ids.shape[1], first.shape[-1])  # (B, T_c, d)
        for i, states in enumerate(rows_states):
            out[i, : lengths[i]] = states
        if not torch.is_inference_mode_enabled():
            for key, states in found.items():
                self.cache[key] = states
            while len(self.cache) > self.max_entries:
                self.cache.popitem(last=False)
        return out

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> ContextStates:
        hidden = (
            self.cached_states(input_ids, attention_mask)
            if self.max_entries
            else self.frozen_states(input_ids, attention_mask)
        )
        top = self._top()
        if top:  # the trained top: gradients flow from here up
            hidden = self._run_layers(top, hidden, attention_mask)
        return ContextStates(hidden)
