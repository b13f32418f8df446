"""The MRE head: logits = W [h_<h>; h_<t>], the fused states at the head and tail start markers; cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.tasks.base import HeadSettings
from components.tasks.layers import HeadBatch, TaskHead
from components.tasks.re.task import ReTask


class ReHead(TaskHead):
    task = ReTask

    def __init__(self, dim: int, labels: list[str], dropout: float, settings: HeadSettings):
        super().__init__(dim, labels, dropout, settings)
        self.relations = labels
        self.dropout = nn.Dropout(dropout)
        self.classify = nn.Linear(2 * dim, len(ReTask.label_ids(labels)["relations"]))

    def logits(self, states: Tensor, batch: HeadBatch) -> Tensor:
        rows = torch.arange(states.shape[0], device=states.device)
        head, tail = batch.labels["head_marker"], batch.labels["tail_marker"]
        pair = torch.cat([states[rows, head], states[rows, tail]], dim=-1)  # (B, 2d)
        return self.classify(self.dropout(pair)).float()  # (B, R)

    def forward(self, states: Tensor, batch: HeadBatch) -> tuple[Tensor, Tensor]:
        logits = self.logits(states, batch)
        return F.cross_entropy(logits, batch.labels["relation"]), logits

    @torch.no_grad()
    def decode(self, states: Tensor, batch: HeadBatch) -> list[tuple[str, float]]:
        """Per instance: (label, score)."""
        prob, label = self.logits(states, batch).softmax(dim=-1).max(dim=-1)
        return [(self.relations[i], p) for i, p in zip(label.tolist(), prob.tolist(), strict=True)]
