"""The validate-data flow: is data/ the version data.dvc names, and does it pass the Great Expectations suites?

check-data-version (dvc status; dvc pull when it differs) -> validate-dataset (GX suites, cached per data version)
-> markdown artifact with the full report -> fail with the readable report when a blocking expectation failed
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from components.common.project_root import find_project_root
from components.validation import log_data_docs, render_report
from flows.outcomes import validation_markdown
from flows.tasks import check_data_version, data_content_version, validate


class DataValidationFailed(RuntimeError):
    """A blocking expectation failed; the message is the whole readable report."""


# persist_result=False: called by train-shapca, this subflow then runs again on every attempt of a retried flow run
# (Prefect reuses a finished subflow only when its result is persisted), so each attempt pulls and checks the data in
# its own fresh clone. What it computes is not lost: the GX validation itself is cached per data version on S3.
@flow(name="validate-data", persist_result=False)
def validate_data(
    dataset: str = "twitter2017",
    context_generator: str = "blip2",
    data_dir: Path = Path("data"),
    check_published_sizes: bool = True,
) -> dict:
    """Validate `dataset` under `data_dir` with the contexts of `context_generator` ("none": no contexts)."""
    tracked = check_data_version(find_project_root())
    version = data_content_version(data_dir, tracked)
    report = validate(dataset, data_dir, context_generator, version, check_published_sizes)
    create_markdown_artifact(
        validation_markdown(report),
        key=f"validation-{dataset}",
        description=f"Great Expectations report for {dataset} ({context_generator} contexts) at data {version}",
    )
    # A validation reused from the cache (per data version, on S3) names the Data Docs of the clone that computed it,
    # on another host or already deleted: that run logged them to MLflow; this one links only Data Docs it built.
    docs = report.data_docs
    if docs is not None and docs.is_file() and docs.resolve().is_relative_to(find_project_root().resolve()):
        create_link_artifact(
            log_data_docs(report).url,
            link_text=f"Great Expectations Data Docs: {dataset}",
            key=f"data-docs-{dataset}",
            description="HTML validation report, also an MLflow artifact",
        )
    else:
        get_run_logger().warning(
            "validation of %s at data %s was reused from the cache: its Data Docs (%s) were built and logged to MLflow "
            "by the run that computed it (experiment shapca-validation), not in this working copy",
            dataset,
            version,
            docs,
        )
    get_run_logger().info("validation of %s at data %s:\n%s", dataset, version, render_report(report))
    if not report.success:
        raise DataValidationFailed(render_report(report))
    return {
        "dataset": dataset,
        "data_version": version,
        "data_pulled": tracked.pulled,
        "passed": True,
        "expectations": len(report.rows),
    }


if __name__ == "__main__":
    validate_data()
