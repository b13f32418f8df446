"""The MNER head: first-sub-token word states -> tag emissions -> linear-chain CRF (pytorch-crf); Viterbi decoding,
a span's score the mean CRF marginal of its decoded tags."""

from __future__ import annotations

from torch import Tensor

from components.data.records import Span
from components.tasks.base import HeadSettings
from components.tasks.layers import CrfTagger, HeadBatch, TaskHead, word_states
from components.tasks.ner.task import NerTask


class NerHead(TaskHead):
    task = NerTask

    def __init__(self, dim: int, labels: list[str], dropout: float, settings: HeadSettings):
        super().__init__(dim, labels, dropout, settings)
        self.types = labels
        self.tagger = CrfTagger(dim, list(NerTask.label_ids(labels)["tags"]), dropout)

    def forward(self, states: Tensor, batch: HeadBatch) -> tuple[Tensor, Tensor]:
        emissions = self.tagger.emissions(word_states(states, batch.word_index))  # (B, W, C)
        return self.tagger.loss(emissions, batch.labels["tags"], batch.word_mask), emissions

    def decode(self, states: Tensor, batch: HeadBatch) -> list[list[tuple[Span, str, float]]]:
        """Per sentence: [(Span, type, score)]."""
        emissions = self.tagger.emissions(word_states(states, batch.word_index))
        return self.tagger.decode(emissions, batch.word_mask)
