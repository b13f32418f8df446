"""The `Batch`: the tensors one forward pass needs, as the processor (processor.py) builds them from records.

Words and sub-tokens. Records hold words; the encoder sees sub-tokens. `word_index[b, w]` is the position of word w's
first sub-token (the state a tagger labels), `word_mask[b, w]` says whether word w made it into the encoder's window.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


@dataclass
class Batch:
    examples: list  # the records, in batch order (predictions are mapped back onto them)
    input_ids: Tensor  # (B, T) the text; in concat mode text [SEP] context
    attention_mask: Tensor  # (B, T)
    text_mask: Tensor  # (B, T) bool: tokens of the text segment (mean-pooled into the text vector)
    word_index: Tensor  # (B, W) first sub-token of each word, 0 where word_mask is False
    word_mask: Tensor  # (B, W) bool
    has_context: Tensor  # (B,) bool
    has_image: Tensor  # (B,) bool
    token_type_ids: Tensor | None = None  # (B, T) segment ids, where the tokenizer makes them
    context_input_ids: Tensor | None = None  # (B, T_c) fusion mode
    context_attention_mask: Tensor | None = None  # (B, T_c)
    context_segment_mask: Tensor | None = None  # (B, T) bool, concat mode: tokens of the context segment
    pixel_values: Tensor | None = None  # (B, 3, H, W); zeros for samples without an image; None if no sample has one
    word_chars: Tensor | None = None  # (B, W, L) each raw word's UTF-8 bytes + 1, 0 = padding (word_features.py)
    word_shapes: Tensor | None = None  # (B, W) each raw word's shape class (word_features.py)
    tags: Tensor | None = None  # (B, W) tag ids (ner: typed BIO, joint: entity BIO)
    head_marker: Tensor | None = None  # (B,) re: position of <h>
    tail_marker: Tensor | None = None  # (B,) re: position of <t>
    relation: Tensor | None = None  # (B,) re: relation id
    pair_sample: Tensor | None = None  # (P,) joint: the sample each gold entity pair belongs to
    pair_head: Tensor | None = None  # (P, 2) joint: head span [start, end) in words
    pair_tail: Tensor | None = None  # (P, 2)
    pair_label: Tensor | None = None  # (P,) joint: relation id, 0 = no relation

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def example_ids(self) -> list[str]:
        return [ex.id for ex in self.examples]

    def to(self, device: torch.device | str) -> Batch:
        moved = {f.name: value.to(device) for f in fields(self) if isinstance(value := getattr(self, f.name), Tensor)}
        return replace(self, **moved)
