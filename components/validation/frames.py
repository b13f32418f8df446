"""Flatten the typed records of one split into the pandas frames that the Great Expectations suites check.

Where no built-in expectation computes a property (a BIO sequence that starts with ``I-``, a sentence of the test
split that also is in train), the property is computed here into a column, so that GX still measures and reports it:

- ``sentences``: one row per example (per instance for mnre): sizes, text, context, leakage flags, span checks.
- ``tokens`` (ner): one row per token with its tag.
- ``mentions`` (ner): one row per entity mention; ``starts_with_i`` marks a mention whose first tag is ``I-T``
  without a ``B-T``/``I-T`` before it. BIO error rate = mentions starting with I- / all mentions.
- ``entities``, ``triples`` (joint): one row per entity span / relation triple of a sentence.
- ``problems``: one row per problem the reader reported (path, line, message).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pandas as pd

from components.data.bio import bio_to_spans
from components.data.records import JointExample, NerExample, ReadProblem, ReExample

TOKEN_JOIN = "\x1f"  # joins tokens into a comparison key; no token contains it, unlike a space


def sentence_key(tokens: Sequence[str]) -> str:
    return TOKEN_JOIN.join(tokens)


def example_key(tokens: Sequence[str], image_id: str) -> str:
    """A multimodal example is its text and its image: the same text with another image is another example."""
    return f"{sentence_key(tokens)}\t{image_id}"


def bio_mentions(tags: Sequence[str]) -> list[tuple[str, bool]]:
    """(entity type, starts_with_i) for every mention, chunked as the metric chunks them (conlleval): a mention starts
    at a B-T tag, or at an I-T tag that continues no T mention (starts_with_i)."""
    return [(entity_type, tags[span.start].startswith("I-")) for entity_type, span in bio_to_spans(tags)]


def sentences_frame(
    task_columns: Sequence[str],
    task_row: Callable[[Any], dict[str, Any]],
    examples: Sequence[NerExample | ReExample | JointExample],
    contexts: dict[str, str] | None,
    train_sentences: set[str] | None = None,
    train_examples: set[str] | None = None,
) -> pd.DataFrame:
    """One row per example. ``task_columns`` and ``task_row`` are the task's own columns and their values for one
    example (its ``TASK_SUITES`` entry, components/validation/suites.py). ``train_*`` (for dev/test) are the train
    split's sentence and example keys."""
    rows = []
    for ex in examples:
        context = contexts.get(ex.image_id) if contexts is not None else None
        row = {
            "id": ex.id,
            "image_id": ex.image_id,
            "n_tokens": len(ex.tokens),
            "empty_tokens": sum(1 for t in ex.tokens if t == ""),
            "has_context": int(context is not None),
            "context": context,
        }
        if train_sentences is not None:
            row["text_in_train"] = sentence_key(ex.tokens) in train_sentences
            row["example_in_train"] = example_key(ex.tokens, ex.image_id) in train_examples
        row.update(task_row(ex))
        rows.append(row)
    # Explicit columns: an empty split still has every column a suite refers to, so only its size check fails.
    columns = ["id", "image_id", "n_tokens", "empty_tokens", "has_context", "context", *task_columns]
    if train_sentences is not None:
        columns += ["text_in_train", "example_in_train"]
    frame = pd.DataFrame(rows, columns=columns)
    # object dtype: a column of texts with some None stays a column of values GX measures lengths of
    frame["context"] = frame["context"].astype(object)
    return frame


def tokens_frame(examples: Iterable[NerExample]) -> pd.DataFrame:
    rows = [(ex.id, tag) for ex in examples for tag in ex.tags]
    return pd.DataFrame(rows, columns=["id", "tag"], dtype=object)


def mentions_frame(examples: Iterable[NerExample]) -> pd.DataFrame:
    rows = [(ex.id, t, starts_with_i) for ex in examples for t, starts_with_i in bio_mentions(ex.tags)]
    frame = pd.DataFrame(rows, columns=["id", "type", "starts_with_i"])
    frame["starts_with_i"] = frame["starts_with_i"].astype(bool)
    return frame


def entities_frame(examples: Iterable[JointExample]) -> pd.DataFrame:
    rows = [(ex.id, s.start, s.end, s.fits(len(ex.tokens))) for ex in examples for s in ex.entities]
    frame = pd.DataFrame(rows, columns=["id", "start", "end", "in_bounds"])
    frame["in_bounds"] = frame["in_bounds"].astype(bool)
    return frame


def triples_frame(examples: Iterable[JointExample]) -> pd.DataFrame:
    rows = []
    for ex in examples:
        entities = set(ex.entities)
        n = len(ex.tokens)
        for triple in ex.triples:
            rows.append(
                (
                    ex.id,
                    triple.relation,
                    triple.head.fits(n) and triple.tail.fits(n),
                    triple.head in entities and triple.tail in entities,
                )
            )
    frame = pd.DataFrame(rows, columns=["id", "relation", "in_bounds", "ends_are_entities"])
    for column in ("in_bounds", "ends_are_entities"):
        frame[column] = frame[column].astype(bool)
    frame["relation"] = frame["relation"].astype(object)
    return frame


def problems_frame(problems: Iterable[ReadProblem]) -> pd.DataFrame:
    rows = [(str(p.path), p.line, p.message) for p in problems]
    return pd.DataFrame(rows, columns=["path", "line", "message"])
