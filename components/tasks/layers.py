"""The torch pieces the task heads share: the base every head extends, the first-sub-token word states, and the
linear-chain CRF tagger with its marginals (the MNER tagger, and the entity tagger of joint extraction).

A head (components/tasks/<task>/head.py) sits on the fused token states (B, T, d), as Hugging Face's `XFor...`
classes sit on their encoder: `forward(states, batch) -> (loss, logits)` on a batch's `labels`, `decode(states,
batch)` -> one prediction per example, in the form the task's `score` and `to_json` read.
"""

from __future__ import annotations

from typing import ClassVar, Protocol

import torch
from torch import Tensor, nn
from torchcrf import CRF

from components.data.bio import bio_to_spans
from components.data.records import Span
from components.tasks.base import HeadSettings, Task


class HeadBatch(Protocol):
    """What a head reads of a `Batch` (components/model/batch.py)."""

    word_index: Tensor  # (B, W) first sub-token of each word
    word_mask: Tensor  # (B, W) bool: the word has a state
    labels: dict[str, Tensor]  # the task's label tensors (its `encode_labels`, as tensors)


class TaskHead(nn.Module):
    """A task's head: built from the encoder's width, the model's labels, the dropout and the task's settings."""

    task: ClassVar[type[Task]]

    def __init__(self, dim: int, labels: list[str], dropout: float, settings: HeadSettings):
        super().__init__()

    def forward(self, states: Tensor, batch: HeadBatch) -> tuple[Tensor, Tensor]:
        """(loss, logits) of fused states (B, T, d) against the batch's labels."""
        raise NotImplementedError

    def decode(self, states: Tensor, batch: HeadBatch) -> list:
        """One prediction per example (in eval mode, without labels)."""
        raise NotImplementedError


def word_states(states: Tensor, word_index: Tensor) -> Tensor:
    """States of each word's first sub-token: (B, T, d), (B, W) -> (B, W, d)."""
    return states.gather(1, word_index[:, :, None].expand(-1, -1, states.shape[-1]))


def crf_marginals(crf: CRF, emissions: Tensor, mask: Tensor) -> Tensor:
    """p(y_t = c | x) by the forward-backward algorithm: emissions (B, W, C), mask (B, W) -> (B, W, C)."""
    steps = emissions.shape[1]
    alpha = [crf.start_transitions + emissions[:, 0]]  # (B, C) each
    for t in range(1, steps):
        step = torch.logsumexp(alpha[-1][:, :, None] + crf.transitions[None], dim=1) + emissions[:, t]
        alpha.append(torch.where(mask[:, t, None], step, alpha[-1]))
    beta = [crf.end_transitions.expand_as(alpha[0])]  # beta at the last step; built backwards
    for t in range(steps - 2, -1, -1):
        step = torch.logsumexp(crf.transitions[None] + (emissions[:, t + 1] + beta[-1])[:, None, :], dim=2)
        beta.append(torch.where(mask[:, t + 1, None], step, crf.end_transitions.expand_as(step)))
    beta.reverse()
    log_z = torch.logsumexp(alpha[-1] + crf.end_transitions, dim=1)  # (B,)
    return (torch.stack(alpha, 1) + torch.stack(beta, 1) - log_z[:, None, None]).exp()


class CrfTagger(nn.Module):
    """Word states -> BIO emissions -> CRF."""

    def __init__(self, dim: int, tags: list[str], dropout: float):
        super().__init__()
        self.tags = tags
        self.dropout = nn.Dropout(dropout)
        self.emit = nn.Linear(dim, len(tags))
        self.crf = CRF(len(tags), batch_first=True)

    def emissions(self, words: Tensor) -> Tensor:
        return self.emit(self.dropout(words)).float()  # (B, W, C); the CRF sums in fp32 even under autocast

    def loss(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        return -self.crf(emissions, tags, mask=mask, reduction="mean")

    @torch.no_grad()
    def decode(self, emissions: Tensor, mask: Tensor) -> list[list[tuple[Span, str, float]]]:
        """Viterbi spans per sample, each with the mean marginal probability of its decoded tags.

        The path is chunked as the metric chunks gold tags (conlleval, `components.data.bio`): the CRF may decode an
        I-X after O, and it then counts as the X entity it is scored as, not as nothing."""
        paths = self.crf.decode(emissions, mask=mask)  # per sample: tag ids of its unmasked words
        marginals = crf_marginals(self.crf, emissions, mask)  # (B, W, C)
        out = []
        for b, path in enumerate(paths):
            names = [self.tags[i] for i in path]
            prob = marginals[b, torch.arange(len(path)), torch.tensor(path, device=marginals.device)].tolist()
            spans = bio_to_spans(names)
            out.append([(span, kind, sum(prob[span.start : span.end]) / len(span)) for kind, span in spans])
        return out
