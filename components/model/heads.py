"""Task heads on the fused token states (B, T, d). Each head turns states into a loss and into predictions.

- NerHead (MNER): first-sub-token word states -> tag emissions -> linear-chain CRF (pytorch-crf); Viterbi decoding,
  a span's score is the mean CRF marginal of its decoded tags.
- ReHead (MRE): logits = W [h_<h>; h_<t>], the states at the head and tail start markers; cross-entropy.
- JointHead (mnre-joint): untyped entity BIO tagging with a CRF, plus an MLP pair classifier over ordered entity pairs,
  logits = MLP([s_h; s_t; s_h * s_t]) with s the mean word state of a span and class 0 = "no relation". It is trained
  on the gold entity pairs and decodes (head span, relation, tail span) triples from the spans the CRF finds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchcrf import CRF

from components.data.bio import bio_tags, bio_to_spans
from components.data.records import NO_RELATION, Span, Triple

ENTITY_TYPE = "ENT"  # the one entity type of the joint head's untyped BIO tagging


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


class NerHead(nn.Module):
    def __init__(self, dim: int, types: list[str], dropout: float):
        super().__init__()
        self.types = types
        self.tagger = CrfTagger(dim, bio_tags(types), dropout)

    def forward(self, states: Tensor, batch) -> tuple[Tensor, Tensor]:
        emissions = self.tagger.emissions(word_states(states, batch.word_index))  # (B, W, C)
        return self.tagger.loss(emissions, batch.tags, batch.word_mask), emissions

    def predict(self, states: Tensor, batch) -> list[list[tuple[Span, str, float]]]:
        emissions = self.tagger.emissions(word_states(states, batch.word_index))
        return self.tagger.decode(emissions, batch.word_mask)


class ReHead(nn.Module):
    def __init__(self, dim: int, relations: list[str], dropout: float):
        super().__init__()
        self.relations = relations
        self.dropout = nn.Dropout(dropout)
        self.classify = nn.Linear(2 * dim, len(relations))

    def logits(self, states: Tensor, batch) -> Tensor:
        rows = torch.arange(states.shape[0], device=states.device)
        pair = torch.cat([states[rows, batch.head_marker], states[rows, batch.tail_marker]], dim=-1)  # (B, 2d)
        return self.classify(self.dropout(pair)).float()  # (B, R)

    def forward(self, states: Tensor, batch) -> tuple[Tensor, Tensor]:
        logits = self.logits(states, batch)
        return F.cross_entropy(logits, batch.relation), logits

    @torch.no_grad()
    def predict(self, states: Tensor, batch) -> list[tuple[str, float]]:
        prob, label = self.logits(states, batch).softmax(dim=-1).max(dim=-1)
        return [(self.relations[i], p) for i, p in zip(label.tolist(), prob.tolist())]


def ordered_pairs(spans_per_sample: list[list[Span]]) -> list[tuple[int, Span, Span]]:
    """(sample, head, tail) for every ordered pair of distinct spans of each sample."""
    return [(b, h, t) for b, spans in enumerate(spans_per_sample) for h in spans for t in spans if h != t]


def pair_tensors(pairs: list[tuple[int, Span, Span]], device=None) -> tuple[Tensor, Tensor, Tensor]:
    """sample (P,), head (P, 2) and tail (P, 2) [start, end) tensors of the pairs."""
    sample = torch.tensor([b for b, _, _ in pairs], dtype=torch.long, device=device)
    head = torch.tensor([(h.start, h.end) for _, h, _ in pairs], dtype=torch.long, device=device).reshape(-1, 2)
    tail = torch.tensor([(t.start, t.end) for _, _, t in pairs], dtype=torch.long, device=device).reshape(-1, 2)
    return sample, head, tail


def span_means(words: Tensor, sample: Tensor, spans: Tensor) -> Tensor:
    """Mean word state of each span: words (B, W, d), sample (P,), spans (P, 2) [start, end) -> (P, d)."""
    prefix = F.pad(words.cumsum(dim=1), (0, 0, 1, 0))  # (B, W + 1, d): prefix[b, k] = sum of the first k words
    total = prefix[sample, spans[:, 1]] - prefix[sample, spans[:, 0]]  # (P, d)
    return total / (spans[:, 1] - spans[:, 0]).clamp_min(1)[:, None].to(words.dtype)


class JointHead(nn.Module):
    def __init__(self, dim: int, relations: list[str], pair_hidden: int, dropout: float):
        super().__init__()
        self.classes = [NO_RELATION, *relations]  # class 0: no relation
        self.tagger = CrfTagger(dim, bio_tags([ENTITY_TYPE]), dropout)
        self.pair = nn.Sequential(
            nn.Linear(3 * dim, pair_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(pair_hidden, len(self.classes))
        )

    def pair_logits(self, words: Tensor, sample: Tensor, head: Tensor, tail: Tensor) -> Tensor:
        h, t = span_means(words, sample, head), span_means(words, sample, tail)  # (P, d) each
        return self.pair(torch.cat([h, t, h * t], dim=-1)).float()  # (P, R + 1)

    def forward(self, states: Tensor, batch) -> tuple[Tensor, Tensor]:
        words = word_states(states, batch.word_index)  # (B, W, d)
        emissions = self.tagger.emissions(words)
        loss = self.tagger.loss(emissions, batch.tags, batch.word_mask)
        if batch.pair_sample.numel():
            logits = self.pair_logits(words, batch.pair_sample, batch.pair_head, batch.pair_tail)
            loss = loss + F.cross_entropy(logits, batch.pair_label)
        return loss, emissions

    @torch.no_grad()
    def predict(self, states: Tensor, batch) -> list[list[tuple[Triple, float]]]:
        words = word_states(states, batch.word_index)
        entities = self.tagger.decode(self.tagger.emissions(words), batch.word_mask)
        pairs = ordered_pairs([[span for span, _, _ in found] for found in entities])
        out: list[list[tuple[Triple, float]]] = [[] for _ in entities]
        if not pairs:
            return out
        logits = self.pair_logits(words, *pair_tensors(pairs, states.device))
        prob, label = logits.softmax(dim=-1).max(dim=-1)
        for (b, h, t), k, p in zip(pairs, label.tolist(), prob.tolist()):
            if k != 0:
                out[b].append((Triple(h, self.classes[k], t), p))
        return out
