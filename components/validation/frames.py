"""Flatten the records of one split into the pandas frames that every task's suites check; a task's own frames are
its checks' (components/tasks/<task>/checks.py).

Where no built-in expectation computes a property (a sentence of the test split that also is in train), the property
is computed here into a column, so that GX still measures and reports it:

- ``sentences``: one row per example (a task may count instances): sizes, text, context, leakage flags, and the
  task's own columns.
- ``problems``: one row per problem the reader reported (path, line, message).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pandas as pd

from components.data.records import Example, ReadProblem, example_key, sentence_key


def sentences_frame(
    task_columns: Sequence[str],
    task_row: Callable[[Any], dict[str, Any]],
    examples: Sequence[Example],
    contexts: dict[str, str] | None,
    train_sentences: set[str] | None = None,
    train_examples: set[str] | None = None,
) -> pd.DataFrame:
    """One row per example. ``task_columns`` and ``task_row`` are the task's own columns and their values for one
    example (its task's checks, components/tasks/<task>/checks.py). ``train_*`` (for dev/test) are the train
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
        if train_sentences is not None and train_examples is not None:
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


def problems_frame(problems: Iterable[ReadProblem]) -> pd.DataFrame:
    rows = [(str(p.path), p.line, p.message) for p in problems]
    return pd.DataFrame(rows, columns=["path", "line", "message"])
