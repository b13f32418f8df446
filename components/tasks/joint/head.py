"""The joint extraction head: untyped entity BIO tagging with a CRF, plus an MLP pair classifier over ordered entity
pairs, logits = MLP([s_h; s_t; s_h * s_t]) with s the mean word state of a span and class 0 = "no relation". It is
trained on the gold entity pairs and decodes (head span, relation, tail span) triples from the spans the CRF finds."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.tasks.joint.records import Triple
from components.tasks.joint.task import JointSettings, JointTask, ordered_pairs, pair_arrays
from components.tasks.layers import CrfTagger, HeadBatch, TaskHead, word_states


def span_means(words: Tensor, sample: Tensor, spans: Tensor) -> Tensor:
    """Mean word state of each span: words (B, W, d), sample (P,), spans (P, 2) [start, end) -> (P, d)."""
    prefix = F.pad(words.cumsum(dim=1), (0, 0, 1, 0))  # (B, W + 1, d): prefix[b, k] = sum of the first k words
    total = prefix[sample, spans[:, 1]] - prefix[sample, spans[:, 0]]  # (P, d)
    return total / (spans[:, 1] - spans[:, 0]).clamp_min(1)[:, None].to(words.dtype)


class JointHead(TaskHead):
    task = JointTask

    def __init__(self, dim: int, labels: list[str], dropout: float, settings: JointSettings):
        super().__init__(dim, labels, dropout, settings)
        ids = JointTask.label_ids(labels)
        self.classes = list(ids["relations"])  # class 0: no relation
        self.tagger = CrfTagger(dim, list(ids["tags"]), dropout)
        self.pair = nn.Sequential(
            nn.Linear(3 * dim, settings.pair_hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(settings.pair_hidden, len(self.classes)),
        )

    def pair_logits(self, words: Tensor, sample: Tensor, head: Tensor, tail: Tensor) -> Tensor:
        h, t = span_means(words, sample, head), span_means(words, sample, tail)  # (P, d) each
        return self.pair(torch.cat([h, t, h * t], dim=-1)).float()  # (P, R + 1)

    def forward(self, states: Tensor, batch: HeadBatch) -> tuple[Tensor, Tensor]:
        labels = batch.labels
        words = word_states(states, batch.word_index)  # (B, W, d)
        emissions = self.tagger.emissions(words)
        loss = self.tagger.loss(emissions, labels["tags"], batch.word_mask)
        if labels["pair_sample"].numel():
            logits = self.pair_logits(words, labels["pair_sample"], labels["pair_head"], labels["pair_tail"])
            loss = loss + F.cross_entropy(logits, labels["pair_label"])
        return loss, emissions

    @torch.no_grad()
    def decode(self, states: Tensor, batch: HeadBatch) -> list[list[tuple[Triple, float]]]:
        """Per sentence: [(Triple, score)]."""
        words = word_states(states, batch.word_index)
        entities = self.tagger.decode(self.tagger.emissions(words), batch.word_mask)
        pairs = ordered_pairs([[span for span, _, _ in found] for found in entities])
        out: list[list[tuple[Triple, float]]] = [[] for _ in entities]
        if not pairs:
            return out
        sample, head, tail = (torch.from_numpy(a).to(states.device) for a in pair_arrays(pairs))
        prob, label = self.pair_logits(words, sample, head, tail).softmax(dim=-1).max(dim=-1)
        for (b, h, t), k, p in zip(pairs, label.tolist(), prob.tolist(), strict=True):
            if k != 0:
                out[b].append((Triple(h, self.classes[k], t), p))
        return out
