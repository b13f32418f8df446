"""Ship a validation's GX Data Docs to MLflow, so that whoever reads the run can open the HTML report.

    link = log_data_docs(report)        # an MLflow run in "shapca-validation" with data_docs/ as its artifacts
    link.url                            # what a Prefect link artifact points at

The local site (``gx/uncommitted/data_docs/local_site``) keeps every validation ever run; the copy logged here holds
the site's index and styles, the dataset's suite pages, and the result pages of this validation only (older results
stay local). ``data_docs/index.html`` is the page to open.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from components.validation.report import ValidationReport

ARTIFACT_DIR = "data_docs"
DEFAULT_EXPERIMENT = "shapca-validation"


@dataclass(frozen=True)
class DataDocsLink:
    run_id: str
    artifact_uri: str  # <run artifact root>/data_docs
    url: str  # the MLflow UI page of the index when the store is a server, else the local index file (file://)


def data_docs_files(report: ValidationReport) -> list[tuple[Path, str]]:
    """(local file, path inside the site) of everything the logged copy holds; an error when there are no Data Docs."""
    if report.data_docs is None or not report.data_docs.is_file():
        raise FileNotFoundError(
            f"no Data Docs for {report.dataset}: {report.data_docs} does not exist (validate first)"
        )
    site = report.data_docs.parent
    chosen = [
        site / "index.html",
        *sorted((site / "static").rglob("*")),
        *sorted((site / "expectations" / report.dataset).rglob("*")),
    ]
    for url in report.data_docs_pages.values():
        if url:
            chosen.append(Path(unquote(urlparse(url).path)))
    return [(path, path.relative_to(site).as_posix()) for path in dict.fromkeys(chosen) if path.is_file()]


def log_data_docs(
    report: ValidationReport, experiment: str = DEFAULT_EXPERIMENT, tracking_uri: str | None = None
) -> DataDocsLink:
    """Log the Data Docs of ``report`` as the artifacts ``data_docs/`` of a new MLflow run (params: dataset, context
    generator, verdict), and return where to open them."""
    from components.tracking.mlflow_setup import setup_tracking
    from components.tracking.run_logging import start_run

    setup = setup_tracking(experiment, tracking_uri=tracking_uri)
    with tempfile.TemporaryDirectory() as tmp, start_run(setup, run_name=f"validate-{report.dataset}") as run:
        for source, relative in data_docs_files(report):
            target = Path(tmp) / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        run.log_params({"dataset": report.dataset, "context_generator": report.context_generator})
        run.log_metrics(
            {
                "validation_success": float(report.success),
                "expectations": len(report.rows),
                "blocking_failures": len(report.blocking_failures),
            }
        )
        run.log_artifact(tmp, ARTIFACT_DIR)  # a directory: its files land under data_docs/
        artifact_uri = run.client.get_run(run.run_id).info.artifact_uri.rstrip("/") + f"/{ARTIFACT_DIR}"
    if setup.tracking_uri.startswith(("http://", "https://")):
        url = (
            f"{setup.tracking_uri.rstrip('/')}/#/experiments/{setup.experiment_id}/runs/{run.run_id}/artifacts/"
            f"{ARTIFACT_DIR}/index.html"
        )
    else:
        url = report.data_docs.resolve().as_uri() if report.data_docs is not None else ""
    return DataDocsLink(run.run_id, artifact_uri, url)
