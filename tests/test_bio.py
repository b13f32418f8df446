"""BIO tags and their chunking (components.data.bio): hand-worked cases that also match seqeval, and the same chunks
out of the reader's validation, the metric and the model's decoder."""

from __future__ import annotations

import re

import pytest
import torch
from seqeval.metrics.sequence_labeling import get_entities

from components.data.bio import bio_tags, bio_to_spans
from components.data.records import Span
from components.tasks.layers import CrfTagger
from components.tasks.ner.checks import bio_mentions


def _seqeval_spans(tags):
    """seqeval's (type, first, last-inclusive) chunks as our half-open spans."""
    return [(t, Span(s, e + 1)) for t, s, e in get_entities(list(tags))]


def test_bio_tags_order():
    assert bio_tags(["PER", "MISC"]) == ["O", "B-PER", "I-PER", "B-MISC", "I-MISC"]


@pytest.mark.parametrize(
    "tags, expected",
    [
        (["B-PER", "I-PER", "O", "B-LOC"], [("PER", Span(0, 2)), ("LOC", Span(3, 4))]),
        # I- after O starts a chunk (conlleval), it is not dropped.
        (["O", "I-PER", "I-PER", "O"], [("PER", Span(1, 3))]),
        (["I-LOC"], [("LOC", Span(0, 1))]),
        (["I-PER", "I-PER"], [("PER", Span(0, 2))]),
        # I- of another type after a chunk starts a new chunk.
        (["B-PER", "I-LOC"], [("PER", Span(0, 1)), ("LOC", Span(1, 2))]),
        (["B-PER", "I-PER", "I-ORG", "I-ORG"], [("PER", Span(0, 2)), ("ORG", Span(2, 4))]),
        # B- always starts a chunk, even of the same type.
        (["B-PER", "I-PER", "B-PER"], [("PER", Span(0, 2)), ("PER", Span(2, 3))]),
        (["I-PER", "B-PER"], [("PER", Span(0, 1)), ("PER", Span(1, 2))]),
        (["B-ORG", "O", "I-ORG"], [("ORG", Span(0, 1)), ("ORG", Span(2, 3))]),
        (
            ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-ORG", "B-ORG", "I-PER"],
            [("PER", Span(0, 2)), ("LOC", Span(3, 5)), ("ORG", Span(5, 6)), ("ORG", Span(6, 7)), ("PER", Span(7, 8))],
        ),
        # A chunk that runs to the end of the sentence is closed there.
        (["O", "O", "B-MISC", "I-MISC"], [("MISC", Span(2, 4))]),
        (["O", "O"], []),
        ([], []),
        # IOBES is read with the same rules.
        (["B-PER", "E-PER", "S-LOC"], [("PER", Span(0, 2)), ("LOC", Span(2, 3))]),
        (["S-PER", "I-PER"], [("PER", Span(0, 1)), ("PER", Span(1, 2))]),
    ],
)
def test_bio_to_spans_hand_worked_and_matches_seqeval(tags, expected):
    assert bio_to_spans(tags) == expected
    assert bio_to_spans(tags) == _seqeval_spans(tags)


@pytest.mark.parametrize("bad", ["X-PER", "B-", "PER", "b-PER", ""])
def test_malformed_tag_names_sentence_token_and_tag(bad):
    with pytest.raises(ValueError, match=rf"sentence 3, token 1: tag {re.escape(repr(bad))}"):
        bio_to_spans(["O", bad], sentence=3)


def test_validation_mentions_are_the_metric_chunks():
    tags = ["I-LOC", "I-LOC", "B-PER", "I-ORG", "O", "I-ORG", "I-ORG"]
    assert bio_mentions(tags) == [("LOC", True), ("PER", False), ("ORG", True), ("ORG", True)]
    assert [t for t, _ in bio_mentions(tags)] == [t for t, _ in bio_to_spans(tags)]


def test_crf_decoder_chunks_an_i_start_as_the_metric_does():
    """Emissions that make Viterbi decode ``O I-PER I-PER B-LOC O I-LOC``: the tagger reports the chunks the metric
    would score, an I- start included, each with a probability in (0, 1]."""
    tags = bio_tags(["PER", "LOC"])
    path = ["O", "I-PER", "I-PER", "B-LOC", "O", "I-LOC"]
    tagger = CrfTagger(dim=4, tags=tags, dropout=0.0)
    with torch.no_grad():
        for p in (tagger.crf.transitions, tagger.crf.start_transitions, tagger.crf.end_transitions):
            p.zero_()
    emissions = torch.full((1, len(path), len(tags)), -5.0)  # (B, W, C)
    for w, tag in enumerate(path):
        emissions[0, w, tags.index(tag)] = 5.0
    (found,) = tagger.decode(emissions, torch.ones(1, len(path), dtype=torch.bool))
    assert [(kind, span) for span, kind, _ in found] == bio_to_spans(path)
    assert [kind for _, kind, _ in found] == ["PER", "LOC", "LOC"]
    assert all(0.0 < score <= 1.0 for _, _, score in found)
