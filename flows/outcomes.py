"""What the flows publish: the markdown of their Prefect artifacts and the outcome train-shapca returns.

Presentation only: every number comes from a component's result (ValidationReport, TrainRunResult, the registry's
PromotionDecision, the metrics of an evaluation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from components.runs.training_run import TrainRunResult
from components.validation import ValidationReport, render_report


def validation_markdown(report: ValidationReport) -> str:
    verdict = "PASSED" if report.success else f"FAILED: {len(report.blocking_failures)} blocking expectation(s)"
    return f"# Validation of {report.dataset}: {verdict}\n\n```text\n{render_report(report)}\n```\n"


def metrics_markdown(title: str, metrics: dict[str, float]) -> str:
    rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in sorted(metrics.items()))
    return f"# {title}\n\n| metric | value |\n| --- | ---: |\n{rows}\n"


@dataclass(frozen=True)
class TrainingOutcome:
    """What train-shapca returns and `shapca run` prints. Registry fields are None when registration is off."""

    run_id: str
    model_uri: str
    metric_name: str
    dev_metric: float
    test_metrics: dict[str, float]
    registered_model: str
    version: str | None
    alias: str | None  # champion or challenger
    reason: str | None
    previous_champion: str | None

    @classmethod
    def of(cls, run: TrainRunResult, registered_model: str, registered) -> TrainingOutcome:
        """`registered`: (version, PromotionDecision) from register-and-promote, or None."""
        version, decision = registered if registered is not None else (None, None)
        return cls(
            run.run_id,
            run.model_uri,
            run.metric_name,
            run.dev_metric,
            dict(run.test_metrics),
            registered_model,
            None if version is None else str(version),
            getattr(decision, "alias", None),
            getattr(decision, "reason", None),
            getattr(decision, "previous_champion", None),
        )

    def as_dict(self) -> dict:
        return asdict(self)

    def decision_line(self) -> str:
        if self.version is None:
            return "not registered (tracking.register_model=false)"
        return f"{self.registered_model} v{self.version} -> {self.alias} ({self.reason})"

    def _metric_rows(self) -> tuple[list[tuple[str, list[float | None]]], dict[str, float]]:
        """Test metrics as rows (overall first, then one per entity type or relation) by METRIC_COLUMNS, plus the
        counts that fit no row (`test_correct`, `test_predicted`)."""
        rows: dict[str, dict[str, float]] = {}
        extra: dict[str, float] = {}
        for key, value in self.test_metrics.items():
            group, _, metric = key.removeprefix("test_").rpartition("_")
            if metric in METRIC_COLUMNS:
                rows.setdefault(group or "overall", {})[metric] = value
            else:
                extra[key.removeprefix("test_")] = value
        ordered = sorted(rows, key=lambda g: (g != "overall", g))
        return [(g, [rows[g].get(c) for c in METRIC_COLUMNS]) for g in ordered], extra

    def text(self) -> str:
        rows, extra = self._metric_rows()
        lines = [f"  {'':<12s}" + "".join(f"{c:>11s}" for c in METRIC_COLUMNS)]
        lines += [
            f"  {group:<12s}" + "".join(f"{_cell(c, v):>11s}" for c, v in zip(METRIC_COLUMNS, values, strict=False))
            for group, values in rows
        ]
        lines += [f"  {name}: {value:g}" for name, value in sorted(extra.items())]
        table = "\n".join(lines)
        return (
            f"test metrics:\n{table}\n"
            f"{self.metric_name} (dev, best epoch): {self.dev_metric:.4f}\n"
            f"MLflow run id: {self.run_id}\n"
            f"alias decision: {self.decision_line()}"
        )

    def markdown(self) -> str:
        rows, extra = self._metric_rows()
        table = [f"| test | {' | '.join(METRIC_COLUMNS)} |", "| --- |" + " ---: |" * len(METRIC_COLUMNS)]
        table += [
            f"| {group} | " + " | ".join(_cell(c, v) for c, v in zip(METRIC_COLUMNS, values, strict=False)) + " |"
            for group, values in rows
        ]
        previous = f"v{self.previous_champion}" if self.previous_champion else "none"
        return (
            "\n".join(
                [
                    f"# Shap-CA training: {self.decision_line()}",
                    "",
                    f"- MLflow run: `{self.run_id}`",
                    f"- model: `{self.model_uri}`",
                    f"- champion before this run: {previous}",
                    f"- {self.metric_name} (dev, best epoch): {self.dev_metric:.4f}",
                    *[f"- test {name}: {value:g}" for name, value in sorted(extra.items())],
                    "",
                    *table,
                ]
            )
            + "\n"
        )


METRIC_COLUMNS = ("precision", "recall", "f1", "support")


def _cell(column: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if column == "support" else f"{value:.4f}"
