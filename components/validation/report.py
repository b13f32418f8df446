"""What a validation run returns and how it prints: one row per expectation result, plus the dataset's statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ValidationRow:
    check: str  # what is checked, in words ("tag in label set")
    expectation: str  # the GX expectation type ("expect_column_values_to_be_in_set")
    split: str  # "train" / "dev" / "test", or "contexts" for the context files
    frame: str  # the flattened frame it ran on: sentences, tokens, mentions, entities, triples, problems
    column: str | None
    success: bool
    blocking: bool
    observed: str  # the measured value in words ("135 of 5207 unexpected (2.59%)", "1.0000")
    unexpected_count: int | None = None
    element_count: int | None = None
    observed_value: Any = None
    examples: list[str] = field(default_factory=list)  # a few offending values or problem messages

    @property
    def status(self) -> str:
        if self.success:
            return "PASS"
        return "FAIL" if self.blocking else "WARN"


@dataclass
class ValidationReport:
    dataset: str
    context_generator: str
    rows: list[ValidationRow]
    stats: dict[str, Any]  # per split: sizes, tokens, mentions, I- starts, coverage, ...
    result_path: Path | None = None
    data_docs: Path | None = None  # the GX Data Docs index (gx/uncommitted/data_docs/local_site/index.html)
    data_docs_pages: dict[str, str] = field(default_factory=dict)  # suite name -> its result page (file:// URL)

    @property
    def success(self) -> bool:
        """True when no blocking expectation failed."""
        return all(row.success for row in self.rows if row.blocking)

    @property
    def blocking_failures(self) -> list[ValidationRow]:
        return [row for row in self.rows if row.blocking and not row.success]

    def find(self, check_prefix: str, split: str | None = None) -> list[ValidationRow]:
        return [r for r in self.rows if r.check.startswith(check_prefix) and (split is None or r.split == split)]


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)).rstrip()  # noqa: E731
    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def render_report(report: ValidationReport, max_observed: int = 70) -> str:
    """A plain-text table of every expectation, then the statistics and the verdict."""
    out = [f"Validation of {report.dataset} (contexts: {report.context_generator})", ""]
    rows = []
    for r in report.rows:
        observed = r.observed
        if r.examples and not r.success:
            observed += " e.g. " + "; ".join(r.examples[:2])
        if len(observed) > max_observed:
            observed = observed[: max_observed - 3] + "..."
        rows.append([r.status, r.split, r.frame, r.check, r.column or "", observed, "yes" if r.blocking else "no"])
    out += _table(["status", "split", "frame", "check", "column", "observed", "blocking"], rows)

    out += ["", "Statistics"]
    per_split = report.stats.get("splits", {})
    if per_split:
        keys = list(dict.fromkeys(k for s in per_split.values() for k in s))
        stat_rows = [[k] + [_fmt(per_split[s].get(k)) for s in per_split] for k in keys]
        out += _table(["", *per_split], stat_rows)
    for key, value in report.stats.items():
        if key != "splits":
            out.append(f"{key}: {_fmt(value)}")

    failures = report.blocking_failures
    warnings = sum(1 for r in report.rows if not r.success and not r.blocking)
    verdict = "PASSED" if report.success else f"FAILED ({len(failures)} blocking expectation(s) failed)"
    out += ["", f"{report.dataset}: {verdict}; {len(report.rows)} expectations, {warnings} warning(s)"]
    for r in failures:
        detail = f" e.g. {'; '.join(r.examples[:3])}" if r.examples else ""
        out.append(f"  FAIL {r.split}/{r.frame}: {r.check}: {r.observed}{detail}")
    if report.result_path is not None:
        out.append(f"GX result JSON: {report.result_path}")
    if report.data_docs is not None:
        out.append(f"Data Docs (open in a browser): {report.data_docs.resolve().as_uri()}")
    return "\n".join(out)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)
