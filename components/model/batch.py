"""The `Batch`: the tensors one forward pass needs, as the processor (processor.py) builds them from records, the
task's labels among them as one mapping.

Words and sub-tokens. Records hold words; the encoder sees sub-tokens. `word_index[b, w]` is the position of word w's
first sub-token (the state a tagger labels), `word_mask[b, w]` says whether word w made it into the encoder's window.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

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
    # The task's label tensors by name, as its `encode_labels` builds them (components/tasks/<task>/task.py says
    # which and their shapes); its head reads them.
    labels: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def example_ids(self) -> list[str]:
        return [ex.id for ex in self.examples]

    def to(self, device: torch.device | str) -> Batch:
        moved: dict[str, Any] = {
            f.name: value.to(device) for f in fields(self) if isinstance(value := getattr(self, f.name), Tensor)
        }
        moved["labels"] = {name: value.to(device) for name, value in self.labels.items()}
        return replace(self, **moved)
