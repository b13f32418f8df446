"""What a task's data checks are made of (components/tasks/<task>/checks.py), torch-free: the thresholds of one
validation run, an expectation with the meta the report reads, and the hooks every task fills in. The checks every
task shares, and the run itself, are components/validation/.

Every expectation carries ``meta``: ``check`` (what the table calls it) and ``blocking`` (whether its failure makes the
validation fail). Great Expectations is imported when a suite is built, not when this module is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.expectations import Expectation


@dataclass(frozen=True)
class Policy:
    """Thresholds of one validation run."""

    max_bio_error_rate: float  # mentions starting with I- / all mentions, per split
    min_context_coverage: float | None  # None: no contexts to check (generator "none")
    coverage_blocking: bool
    max_empty_context_rate: float
    check_published_sizes: bool


def meta(check: str, blocking: bool = True, **extra: Any) -> dict[str, Any]:
    return {"check": check, "blocking": blocking, **extra}


def all_in(column: str, values: Sequence[Any], check: str, blocking: bool = True, **kwargs: Any) -> Expectation:
    """Every value of ``column`` is one of ``values`` (``mostly`` relaxes it to a share)."""
    import great_expectations.expectations as gxe

    return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=list(values), meta=meta(check, blocking), **kwargs)


class TaskChecks:
    """What validation checks for one task: the unit a split counts, the task's columns of the sentences frame and
    their expectations, the frames only its records have (with their expectations) and its statistics."""

    unit: ClassVar[str] = "sentences"
    sentence_columns: ClassVar[tuple[str, ...]] = ()  # the task's own columns of the sentences frame
    frame_kinds: ClassVar[tuple[str, ...]] = ()  # the kinds of `record_frames`, each a GX data asset

    @classmethod
    def sentence_row(cls, example: Any) -> dict[str, Any]:
        """The values of `sentence_columns` for one example."""
        return {}

    @classmethod
    def sentence_expectations(cls, labels: list[str]) -> list[Expectation]:
        return []

    @classmethod
    def record_frames(
        cls, labels: list[str], examples: Sequence[Any], policy: Policy
    ) -> list[tuple[str, pd.DataFrame, list[Expectation]]]:
        """(frame kind, frame, expectations) of the frames beyond the sentences."""
        return []

    @classmethod
    def stats(cls, examples: Sequence[Any]) -> dict[str, Any]:
        return {}
