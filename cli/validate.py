"""`shapca validate`: run the Great Expectations suites on one dataset (or all four), print the table of every
expectation, write the full GX results as JSON, and exit 1 when a blocking expectation fails."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import typer

from cli._choices import Dataset, GeneratorOrNone


def validate(
    dataset: Dataset | None = typer.Option(None, "--dataset", "-d", help="The dataset to validate."),
    all_datasets: bool = typer.Option(False, "--all", help="Validate all four datasets."),
    data_dir: Path = typer.Option(Path("data"), "--data-dir", help="Where `dvc pull` materialised the data."),
    context_generator: GeneratorOrNone = typer.Option("blip2", "--context-generator", help="Whose contexts to check."),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="GX result JSON (a directory with --all). Default: outputs/validation/<dataset>.json.",
    ),
    max_bio_error_rate: float = typer.Option(
        0.05, "--max-bio-error-rate", help="Fail when more than this share of a split's mentions start with I-."
    ),
    min_context_coverage: float | None = typer.Option(
        None,
        "--min-context-coverage",
        help="Make coverage blocking at this share (default: 100%, blocking for blip2 on the Twitter sets).",
    ),
    published_sizes: bool = typer.Option(
        True,
        "--published-sizes/--any-sizes",
        help="Require the published split sizes (default), or only non-empty splits (for other copies of the data).",
    ),
) -> None:
    """Validate datasets with Great Expectations (the checkpoints of gx/), print a table of every expectation and
    where the Data Docs HTML report is."""
    if all_datasets == (dataset is not None):
        raise typer.BadParameter("give exactly one of --dataset NAME or --all")

    from components.data.records import DataFormatError
    from components.validation import open_gx_workspace, render_report, validate_dataset

    names: list[str] = list(get_args(Dataset)) if dataset is None else [dataset]  # exactly one was given
    gx_workspace = open_gx_workspace()  # one GX workspace for the whole command: it is the slow part to start
    failed = []
    for name in names:
        if all_datasets:
            result_path = (output or Path("outputs/validation")) / f"{name}.json"
        else:
            result_path = output or Path("outputs/validation") / f"{name}.json"
        try:
            report = validate_dataset(
                name,
                data_dir,
                context_generator=context_generator,
                max_bio_error_rate=max_bio_error_rate,
                result_path=result_path,
                min_context_coverage=min_context_coverage,
                check_published_sizes=published_sizes,
                gx_workspace=gx_workspace,
            )
        except (FileNotFoundError, DataFormatError) as err:
            typer.echo(f"{name}: cannot validate: {err}", err=True)
            failed.append(name)
            continue
        typer.echo(render_report(report))
        typer.echo("")
        if not report.success:
            failed.append(name)
    if failed:
        typer.echo(f"validation failed: {', '.join(failed)}", err=True)
        raise typer.Exit(code=1)


def add_commands(app: typer.Typer) -> None:
    app.command(
        "validate",
        epilog="Example: shapca validate --dataset twitter2017  (then open the printed Data Docs "
        "file:// URL in a browser)",
    )(validate)
