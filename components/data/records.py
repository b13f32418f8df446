"""The records every stage shares: token spans, what a reader reports, the context set of a run, and what every
task's example has (`Example`; the examples themselves are the tasks', components/tasks/<task>/records.py).

Spans are token offsets, half-open: ``Span(start=2, end=5)`` covers tokens 2, 3 and 4, as MNRE's ``pos`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Span:
    start: int  # first token
    end: int  # one past the last token

    def __len__(self) -> int:
        return self.end - self.start

    def fits(self, n_tokens: int) -> bool:
        """Whether the span is non-empty and inside a sentence of ``n_tokens`` tokens."""
        return 0 <= self.start < self.end <= n_tokens


class Example(Protocol):
    """What every task's record has (components/tasks/<task>/records.py): an id unique within its dataset, the id of
    its image and its words. Everything that is not the task's own reads records through this."""

    @property
    def id(self) -> str: ...  # "<split>-<index>"

    @property
    def image_id(self) -> str: ...  # the image file's name without its extension

    @property
    def tokens(self) -> list[str]: ...


TOKEN_JOIN = "\x1f"  # joins tokens into a comparison key; no token contains it, unlike a space


def sentence_key(tokens: Sequence[str]) -> str:
    """A sentence's text as one comparable string."""
    return TOKEN_JOIN.join(tokens)


def example_key(tokens: Sequence[str], image_id: str) -> str:
    """A multimodal example is its text and its image: the same text with another image is another example."""
    return f"{sentence_key(tokens)}\t{image_id}"


@dataclass(frozen=True)
class ReadProblem:
    """A row a reader could not accept, located precisely enough to fix the file."""

    path: Path
    line: int  # 1-based line number in ``path``
    message: str  # what was found and what was expected

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class DataFormatError(ValueError):
    """Raised by a reader in strict mode; carries the first problem (and all of them)."""

    def __init__(self, problems: list[ReadProblem]):
        self.problems = problems
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")


@dataclass
class ReadResult:
    """What a lenient read returns: the rows it accepted and the problems it found, in file order."""

    examples: list = field(default_factory=list)
    problems: list[ReadProblem] = field(default_factory=list)

    def examples_or_raise(self) -> list:
        """What a strict read returns: the examples, or ``DataFormatError`` listing every problem."""
        if self.problems:
            raise DataFormatError(self.problems)
        return self.examples


@dataclass(frozen=True)
class ContextSet:
    """The contexts one training run uses: image_id -> text written by one generator (an LMM)."""

    generator: str  # "blip2", "mplug-owl", or the id of a generated set
    contexts: dict[str, str]

    def content_hash(self) -> str:
        """sha256 over the sorted (image_id, text) pairs: the same contexts give the same hash, whatever their order."""
        import hashlib
        import json

        digest = hashlib.sha256()
        for image_id in sorted(self.contexts):
            digest.update(json.dumps([image_id, self.contexts[image_id]], ensure_ascii=False).encode("utf-8"))
            digest.update(b"\n")
        return digest.hexdigest()

    def coverage(self, image_ids) -> float:
        """Share of the given image ids that have a context."""
        ids = list(image_ids)
        return sum(i in self.contexts for i in ids) / len(ids) if ids else 0.0
