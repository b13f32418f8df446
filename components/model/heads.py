"""Task heads on the fused token states (B, T, d), one class per task as Hugging Face's `XFor...` classes, and the
task registry that maps a task name to its head class.

A head class is everything the project knows about its task: its label names and ids (`label_ids`, the one place the
id order is built), the words the encoder reads (`input_words`), the label tensors of a batch (`encode_labels`), the
loss (`forward`), the predictions (`predict`), their scoring against gold records (`score`, `confusion`), their JSON
form for consumers (`to_json`), the serving row it takes (`serving_spans`, `serving_record`, `serving_example`) and
the label columns of a run's logged datasets (`label_columns`). The model, the processor, evaluation, tracking and
serving ask the registry (`head_class(task)`) instead of branching on the task; data validation, which loads no model
(nor torch), asks its own per-task registry of checks (TASK_SUITES, components/validation/suites.py).

- NerHead (MNER): first-sub-token word states -> tag emissions -> linear-chain CRF (pytorch-crf); Viterbi decoding,
  a span's score is the mean CRF marginal of its decoded tags.
- ReHead (MRE): logits = W [h_<h>; h_<t>], the states at the head and tail start markers; cross-entropy.
- JointHead (mnre-joint): untyped entity BIO tagging with a CRF, plus an MLP pair classifier over ordered entity pairs,
  logits = MLP([s_h; s_t; s_h * s_t]) with s the mean word state of a span and class 0 = "no relation". It is trained
  on the gold entity pairs and decodes (head span, relation, tail span) triples from the spans the CRF finds.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchcrf import CRF

from components.data.bio import OUTSIDE, bio_tags, bio_to_spans
from components.data.metrics import Scores, re_scores, span_scores, triple_scores
from components.data.records import NO_RELATION, JointExample, NerExample, ReExample, Span, Triple
from components.model.batch import Batch

ENTITY_TYPE = "ENT"  # the one entity type of the joint head's untyped BIO tagging

LabelIds = dict[str, dict[str, int]]  # "tags" / "relations" -> label -> id


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


def paired_labels(
    gold: Iterable[Iterable[tuple[Hashable, str]]], pred: Iterable[Iterable[tuple[Hashable, str]]], nothing: str
) -> tuple[list[str], list[str]]:
    """(gold label, predicted label) pairs of items located by a key (an entity span; a (head, tail) span pair), one
    collection of (key, label) per sentence: each gold item is paired with the label predicted at its key (or
    `nothing`), and each predicted key without a gold item with gold `nothing`, so false positives show too."""
    gold_labels, pred_labels = [], []
    for gold_sentence, pred_sentence in zip(gold, pred, strict=False):
        predicted_at = dict(pred_sentence)
        gold_keys = set()
        for key, label in gold_sentence:
            gold_keys.add(key)
            gold_labels.append(label)
            pred_labels.append(predicted_at.get(key, nothing))
        for key, label in predicted_at.items():
            if key not in gold_keys:
                gold_labels.append(nothing)
                pred_labels.append(label)
    return gold_labels, pred_labels


def json_spans(spans: Iterable[Span]) -> str:
    return json.dumps([[s.start, s.end] for s in spans])


def check_span(example, span: Span, what: str) -> None:
    if not span.fits(len(example.tokens)):
        raise ValueError(
            f"example {example.id}: {what} {span} is not a non-empty span inside its {len(example.tokens)} tokens"
        )


def label_id(ids: dict[str, int], example, label: str, what: str, where: str = "") -> int:
    if label not in ids:
        raise ValueError(f"example {example.id}: {what} {label!r}{where} is not one of the model's labels {list(ids)}")
    return ids[label]


class TaskHead(nn.Module):
    """What every task head answers. `labels` are the model's labels as the dataset registry lists them."""

    task: ClassVar[str]
    description: ClassVar[str]  # what the model card calls the task
    example_type: ClassVar[type]
    special_tokens: ClassVar[tuple[str, ...]] = ()  # added to the text tokenizer, with embeddings of their own
    serving_spans: ClassVar[tuple[str, ...]] = ()  # the [start, end) span columns a serving row must carry
    warns_on_cut: ClassVar[bool] = True  # a tagger drops the words past the window; RE fails the example instead
    target_column: ClassVar[str]  # the gold-label column of `label_columns`: a run's MLflow dataset target

    @classmethod
    def check_labels(cls, labels: list[str]) -> list[str]:
        labels = list(labels)
        if not labels or len(set(labels)) != len(labels):
            raise ValueError(f"{cls.task}: labels must be a non-empty list without repeats, got {labels}")
        return labels

    @classmethod
    def label_ids(cls, labels: list[str]) -> LabelIds:
        """The label maps of a batch's label tensors: the one place their id order is built."""
        raise NotImplementedError

    @classmethod
    def input_words(cls, example) -> list[str]:
        """The words the text encoder reads for `example` (before the window cuts them)."""
        if not isinstance(example, cls.example_type):
            raise ValueError(
                f"example {example.id}: the {cls.task} task needs {cls.example_type.__name__} records, "
                f"got {type(example).__name__}"
            )
        return list(example.tokens)

    @classmethod
    def encode_labels(cls, batch: Batch, examples: list, ids: LabelIds, encoding, tokenizer, max_text_tokens: int):
        """Set the batch's label tensors from the records' gold labels."""
        raise NotImplementedError

    @classmethod
    def label_columns(cls, example) -> dict[str, str]:
        """The example's gold labels as string columns (a run's MLflow dataset of a split, components/tracking)."""
        raise NotImplementedError

    @classmethod
    def serving_record(cls, row_id: str, tokens: list[str], spans: dict[str, Span], labels: list[str]):
        """A consumer's row as the record the processor takes; its gold labels are placeholders prediction ignores."""
        raise NotImplementedError

    @classmethod
    def serving_example(cls) -> dict[str, object]:
        """One consumer row of this task (its text and `serving_spans`): the model signature's input example."""
        return {"text": "Obama visits the Golden Gate Bridge in San Francisco"}

    @classmethod
    def score(cls, examples: list, predictions: list) -> Scores:
        raise NotImplementedError

    @classmethod
    def confusion(cls, examples: list, predictions: list) -> tuple[list[str], list[str]]:
        """Paired (gold, predicted) labels for a confusion matrix."""
        raise NotImplementedError

    @classmethod
    def to_json(cls, example, prediction) -> dict:
        """A prediction as the JSON a consumer reads (the serving contract, components/tracking/pyfunc_model.py)."""
        raise NotImplementedError


class NerHead(TaskHead):
    task = "ner"
    description = "multimodal named entity recognition (BIO tags per token)"
    example_type = NerExample
    target_column = "tags"

    def __init__(self, dim: int, labels: list[str], config):
        super().__init__()
        self.types = labels
        self.tagger = CrfTagger(dim, list(self.label_ids(labels)["tags"]), config.dropout)

    @classmethod
    def check_labels(cls, labels: list[str]) -> list[str]:
        labels = super().check_labels(labels)
        if any(t == OUTSIDE or t[:2] in ("B-", "I-") for t in labels):
            raise ValueError(f"ner: labels are entity types such as PER, LOC (BIO tags derive from them), got {labels}")
        return labels

    @classmethod
    def label_ids(cls, labels: list[str]) -> LabelIds:
        return {"tags": {t: i for i, t in enumerate(bio_tags(labels))}}

    @classmethod
    def encode_labels(cls, batch, examples, ids, encoding, tokenizer, max_text_tokens):
        batch.tags = torch.zeros_like(batch.word_index)
        width = batch.word_index.shape[1]
        for b, ex in enumerate(examples):
            if len(ex.tags) != len(ex.tokens):
                raise ValueError(f"example {ex.id}: an NER example needs one tag per token")
            tags = [label_id(ids["tags"], ex, t, "tag", f" at token {i}") for i, t in enumerate(ex.tags)]
            batch.tags[b, : min(len(tags), width)] = torch.tensor(tags[:width])

    def forward(self, states: Tensor, batch) -> tuple[Tensor, Tensor]:
        emissions = self.tagger.emissions(word_states(states, batch.word_index))  # (B, W, C)
        return self.tagger.loss(emissions, batch.tags, batch.word_mask), emissions

    def predict(self, states: Tensor, batch) -> list[list[tuple[Span, str, float]]]:
        """Per sentence: [(Span, type, score)]."""
        emissions = self.tagger.emissions(word_states(states, batch.word_index))
        return self.tagger.decode(emissions, batch.word_mask)

    @classmethod
    def label_columns(cls, example):
        return {"tags": " ".join(example.tags)}

    @classmethod
    def serving_record(cls, row_id, tokens, spans, labels):
        return NerExample(id=row_id, image_id=row_id, tokens=tokens, tags=[OUTSIDE] * len(tokens))

    @classmethod
    def score(cls, examples, predictions):
        gold = [set(bio_to_spans(e.tags)) for e in examples]
        pred = [{(label, span) for span, label, _ in sentence} for sentence in predictions]
        return span_scores(gold, pred)

    @classmethod
    def confusion(cls, examples, predictions):
        at_span = [[(span, label) for label, span in set(bio_to_spans(e.tags))] for e in examples]
        predicted_at_span = [
            [(span, label) for label, span in {(label, span) for span, label, _ in sentence}]
            for sentence in predictions
        ]
        return paired_labels(at_span, predicted_at_span, OUTSIDE)

    @classmethod
    def to_json(cls, example, prediction):
        entities = [
            {
                "start": s.start,
                "end": s.end,
                "type": label,
                "text": " ".join(example.tokens[s.start : s.end]),
                "score": float(score),
            }
            for s, label, score in prediction
        ]
        return {"entities": entities}


class ReHead(TaskHead):
    task = "re"
    description = "multimodal relation extraction (one relation per head/tail entity pair)"
    example_type = ReExample
    target_column = "relation"
    # Entity markers, wrapped around the head and tail spans; whole tokens with embeddings of their own.
    HEAD_START, HEAD_END, TAIL_START, TAIL_END = "<h>", "</h>", "<t>", "</t>"
    special_tokens = (HEAD_START, HEAD_END, TAIL_START, TAIL_END)
    serving_spans = ("head", "tail")
    warns_on_cut = False

    def __init__(self, dim: int, labels: list[str], config):
        super().__init__()
        self.relations = labels
        self.dropout = nn.Dropout(config.dropout)
        self.classify = nn.Linear(2 * dim, len(self.label_ids(labels)["relations"]))

    @classmethod
    def label_ids(cls, labels: list[str]) -> LabelIds:
        return {"relations": {r: i for i, r in enumerate(labels)}}

    @classmethod
    def input_words(cls, example) -> list[str]:
        """Words with <h> ... </h> and <t> ... </t> around the head and tail (closing markers first where they meet)."""
        super().input_words(example)
        check_span(example, example.head, "head")
        check_span(example, example.tail, "tail")
        before: dict[int, list[str]] = {}
        for position, marker in [
            (example.head.end, cls.HEAD_END),
            (example.tail.end, cls.TAIL_END),
            (example.head.start, cls.HEAD_START),
            (example.tail.start, cls.TAIL_START),
        ]:
            before.setdefault(position, []).append(marker)
        words: list[str] = []
        for i in range(len(example.tokens) + 1):
            words += before.get(i, [])
            if i < len(example.tokens):
                words.append(example.tokens[i])
        return words

    @classmethod
    def encode_labels(cls, batch, examples, ids, encoding, tokenizer, max_text_tokens):
        head_id, tail_id = tokenizer.convert_tokens_to_ids([cls.HEAD_START, cls.TAIL_START])
        input_ids = encoding["input_ids"]
        head, tail = [], []
        for b, ex in enumerate(examples):
            found = [(input_ids[b] == marker).nonzero() for marker in (head_id, tail_id)]
            if not all(len(f) for f in found):
                raise ValueError(
                    f"example {ex.id}: an entity marker falls beyond model.max_text_tokens="
                    f"{max_text_tokens}; raise it to read this sentence"
                )
            head.append(int(found[0][0]))
            tail.append(int(found[1][0]))
        batch.head_marker, batch.tail_marker = torch.tensor(head), torch.tensor(tail)
        batch.relation = torch.tensor([label_id(ids["relations"], ex, ex.relation, "relation") for ex in examples])

    def logits(self, states: Tensor, batch) -> Tensor:
        rows = torch.arange(states.shape[0], device=states.device)
        pair = torch.cat([states[rows, batch.head_marker], states[rows, batch.tail_marker]], dim=-1)  # (B, 2d)
        return self.classify(self.dropout(pair)).float()  # (B, R)

    def forward(self, states: Tensor, batch) -> tuple[Tensor, Tensor]:
        logits = self.logits(states, batch)
        return F.cross_entropy(logits, batch.relation), logits

    @torch.no_grad()
    def predict(self, states: Tensor, batch) -> list[tuple[str, float]]:
        """Per instance: (label, score)."""
        prob, label = self.logits(states, batch).softmax(dim=-1).max(dim=-1)
        return [(self.relations[i], p) for i, p in zip(label.tolist(), prob.tolist(), strict=False)]

    @classmethod
    def label_columns(cls, example):
        return {"head": json_spans([example.head]), "tail": json_spans([example.tail]), "relation": example.relation}

    @classmethod
    def serving_example(cls):
        # the pair "Obama", "the Golden Gate Bridge"
        return {"text": "Obama visits the Golden Gate Bridge", "head": [0, 1], "tail": [2, 5]}

    @classmethod
    def serving_record(cls, row_id, tokens, spans, labels):
        # The relation is a placeholder: the model's first label, which every RE model has.
        return ReExample(
            id=row_id, image_id=row_id, tokens=tokens, head=spans["head"], tail=spans["tail"], relation=labels[0]
        )

    @classmethod
    def score(cls, examples, predictions):
        return re_scores([e.relation for e in examples], [label for label, _ in predictions])

    @classmethod
    def confusion(cls, examples, predictions):
        return [e.relation for e in examples], [label for label, _ in predictions]

    @classmethod
    def to_json(cls, example, prediction):
        label, score = prediction
        return {"relation": label, "score": float(score)}


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


class JointHead(TaskHead):
    task = "joint"
    description = "joint multimodal entity and relation extraction (entity spans and relation triples)"
    example_type = JointExample
    target_column = "triples"

    def __init__(self, dim: int, labels: list[str], config):
        super().__init__()
        ids = self.label_ids(labels)
        self.classes = list(ids["relations"])  # class 0: no relation
        self.tagger = CrfTagger(dim, list(ids["tags"]), config.dropout)
        self.pair = nn.Sequential(
            nn.Linear(3 * dim, config.pair_hidden),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.pair_hidden, len(self.classes)),
        )

    @classmethod
    def check_labels(cls, labels: list[str]) -> list[str]:
        labels = super().check_labels(labels)
        if NO_RELATION in labels:
            raise ValueError(f"joint: labels are the relations without {NO_RELATION!r} (the pair classifier adds it)")
        return labels

    @classmethod
    def label_ids(cls, labels: list[str]) -> LabelIds:
        return {
            "tags": {t: i for i, t in enumerate(bio_tags([ENTITY_TYPE]))},
            "relations": {r: i for i, r in enumerate([NO_RELATION, *labels])},
        }

    @classmethod
    def encode_labels(cls, batch, examples, ids, encoding, tokenizer, max_text_tokens):
        """Entity BIO tags (a span overlapping an earlier one is not tagged: BIO cannot hold both) and every ordered
        pair of gold entities with its relation (the first triple's where a pair has several), 0 where none."""
        batch.tags = torch.zeros_like(batch.word_index)
        begin, inside = ids["tags"][f"B-{ENTITY_TYPE}"], ids["tags"][f"I-{ENTITY_TYPE}"]
        visible, relations = [], []  # per sample: spans with word states, (head, tail) -> relation id
        for b, ex in enumerate(examples):
            relation_of: dict[tuple[Span, Span], int] = {}
            for triple in ex.triples:
                relation_of.setdefault(
                    (triple.head, triple.tail), label_id(ids["relations"], ex, triple.relation, "relation")
                )
            spans = {*ex.entities, *(s for t in ex.triples for s in (t.head, t.tail))}
            spans = sorted(spans, key=lambda s: (s.start, s.end))
            taken = torch.zeros(len(ex.tokens), dtype=torch.bool)
            row = torch.zeros(len(ex.tokens), dtype=torch.long)
            for span in spans:
                check_span(ex, span, "entity")
                if not taken[span.start : span.end].any():
                    taken[span.start : span.end] = True
                    row[span.start] = begin
                    row[span.start + 1 : span.end] = inside
            width = min(len(row), batch.tags.shape[1])  # words cut at the window have no column
            batch.tags[b, :width] = row[:width]
            kept = int(batch.word_mask[b].sum())  # spans past the window have no word states
            visible.append([s for s in spans if s.end <= kept])
            relations.append(relation_of)
        pairs = ordered_pairs(visible)
        batch.pair_sample, batch.pair_head, batch.pair_tail = pair_tensors(pairs)
        batch.pair_label = torch.tensor([relations[b].get((h, t), 0) for b, h, t in pairs], dtype=torch.long)

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
        """Per sentence: [(Triple, score)]."""
        words = word_states(states, batch.word_index)
        entities = self.tagger.decode(self.tagger.emissions(words), batch.word_mask)
        pairs = ordered_pairs([[span for span, _, _ in found] for found in entities])
        out: list[list[tuple[Triple, float]]] = [[] for _ in entities]
        if not pairs:
            return out
        logits = self.pair_logits(words, *pair_tensors(pairs, states.device))
        prob, label = logits.softmax(dim=-1).max(dim=-1)
        for (b, h, t), k, p in zip(pairs, label.tolist(), prob.tolist(), strict=False):
            if k != 0:
                out[b].append((Triple(h, self.classes[k], t), p))
        return out

    @classmethod
    def label_columns(cls, example):
        triples = [[t.head.start, t.head.end, t.relation, t.tail.start, t.tail.end] for t in example.triples]
        return {"entities": json_spans(example.entities), "triples": json.dumps(triples)}

    @classmethod
    def serving_record(cls, row_id, tokens, spans, labels):
        return JointExample(id=row_id, image_id=row_id, tokens=tokens, entities=[], triples=[])

    @classmethod
    def score(cls, examples, predictions):
        gold = [set(e.triples) for e in examples]
        pred = [{triple for triple, _ in sentence} for sentence in predictions]
        return triple_scores(gold, pred)

    @classmethod
    def confusion(cls, examples, predictions):
        at_pair = [[((t.head, t.tail), t.relation) for t in set(e.triples)] for e in examples]
        predicted_at_pair = [[((t.head, t.tail), t.relation) for t in {t for t, _ in s}] for s in predictions]
        return paired_labels(at_pair, predicted_at_pair, NO_RELATION)

    @classmethod
    def to_json(cls, example, prediction):
        triples = [
            {
                "head": [t.head.start, t.head.end],
                "relation": t.relation,
                "tail": [t.tail.start, t.tail.end],
                "score": float(score),
            }
            for t, score in prediction
        ]
        return {"triples": triples}


# The task registry: a task name -> its head class. Datasets name their task (components/data/datasets.py).
TASK_HEADS: dict[str, type[TaskHead]] = {head.task: head for head in (NerHead, ReHead, JointHead)}


def head_class(task: str) -> type[TaskHead]:
    if task not in TASK_HEADS:
        raise ValueError(f"task must be one of {', '.join(repr(t) for t in TASK_HEADS)}, got {task!r}")
    return TASK_HEADS[task]
