"""The Great Expectations suites every task shares: what the sentences frame of a split must meet (size, no empty
sentence or token, context coverage, no leakage from train) with the task's own sentence checks, and the reader's
problems. The task's other frames and their checks are its own (components/tasks/<task>/checks.py).

Every expectation carries ``meta``: ``check`` (what the table calls it) and ``blocking`` (whether its failure makes the
validation fail). Informational expectations (context coverage where no published set covers the images, sentences
shared with train under another image) are reported but never block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from components.datasets import DatasetSpec
from components.tasks import get_task
from components.tasks.checks import Policy, all_in, meta

if TYPE_CHECKING:
    from great_expectations.expectations import Expectation

# The checks below are built only when a suite is built, so GX is imported by the command that validates, not by
# whoever imports this module.


def sentence_expectations(spec: DatasetSpec, split: str, policy: Policy) -> list[Expectation]:
    import great_expectations.expectations as gxe

    checks = get_task(spec.task).checks
    unit = checks.unit
    out: list[Expectation] = []
    if policy.check_published_sizes:
        expected = spec.sizes[split]
        check = f"split size = published {expected} {unit}"
        out.append(gxe.ExpectTableRowCountToEqual(value=expected, meta=meta(check)))
    else:
        out.append(gxe.ExpectTableRowCountToBeBetween(min_value=1, meta=meta(f"split size >= 1 {unit}")))
    out += [
        gxe.ExpectColumnValuesToBeBetween(column="n_tokens", min_value=1, meta=meta("no empty sentence")),
        all_in("empty_tokens", [0], "no empty token"),
    ]
    out += checks.sentence_expectations(spec.labels)
    if policy.min_context_coverage is not None:
        out += [
            gxe.ExpectColumnMeanToBeBetween(
                column="has_context",
                min_value=policy.min_context_coverage,
                max_value=1.0,
                meta=meta(
                    f"context coverage >= {policy.min_context_coverage:.0%}"
                    + ("" if policy.coverage_blocking else " (informational)"),
                    policy.coverage_blocking,
                    format="share",
                ),
            ),
            gxe.ExpectColumnValueLengthsToBeBetween(
                column="context",
                min_value=1,
                mostly=1.0 - policy.max_empty_context_rate,
                meta=meta(f"empty context texts <= {policy.max_empty_context_rate:.0%}", policy.coverage_blocking),
            ),
        ]
    if split != "train":
        out += [
            all_in("example_in_train", [False], "no leakage: (text, image) also in train"),
            all_in("text_in_train", [False], "text also in train (another image)", blocking=False),
        ]
    return out


def problem_expectations() -> list[Expectation]:
    import great_expectations.expectations as gxe

    return [gxe.ExpectTableRowCountToEqual(value=0, meta=meta("reader problems = 0"))]
