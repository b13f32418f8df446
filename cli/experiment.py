"""`shapca experiment ablation|report|probe`: the ablation grid, docs/RESULTS.md from its MLflow runs, and a model's
alignment sharpness.

    shapca experiment ablation --dataset twitter2017 --seeds 3                      # variants 1-7, BLIP-2 contexts
    shapca experiment ablation --dataset twitter2017 --seeds 3 --generator mplug-owl  # variants 2 and 5
    shapca experiment ablation --dataset twitter2015 --seeds 2                      # variants 1, 4, 5, 6, 7
    shapca experiment ablation --dataset mnre --seeds 3                             # text only
    shapca experiment report --output docs/RESULTS.md
    shapca experiment probe --model-uri models:/shapca-twitter2017/1       # alignment sharpness, fusion gates

An interrupted `ablation` rerun with the same arguments trains only the points without a FINISHED run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cli._choices import Dataset, Generator, Split
from cli._options import ConfigOption, OverrideOption, command_line

ExperimentOption = Annotated[str, typer.Option("--experiment", help="MLflow experiment of the ablation runs")]


def ablation(
    dataset: Annotated[Dataset, typer.Option(help="the benchmark of the grid")],
    seeds: Annotated[int, typer.Option(help="seeds per variant: base train.seed + 0, 1, ...")] = 3,
    epochs: Annotated[int | None, typer.Option(help="train.epochs for every run (default: the config's)")] = None,
    variants: Annotated[
        str | None,
        typer.Option(
            help="comma-separated numbers or names: 1 text, 2 concat, 3 fusion, 4 infonce, 5 shapca, 6 coverage, "
            "7 maxsim, 8 gatefloor, 9 gateopen (default: the grid for this dataset and generator)"
        ),
    ] = None,
    generator: Annotated[Generator | None, typer.Option(help="context generator")] = None,
    config: ConfigOption = Path("configs/default.yaml"),
    override: OverrideOption = None,
    experiment: ExperimentOption = "shapca-ablation",
    output_root: Annotated[
        Path | None, typer.Option(help="checkpoint root (default <train.output_dir>/ablation)")
    ] = None,
    keep_checkpoints: Annotated[bool, typer.Option(help="keep each finished point's checkpoints")] = False,
) -> None:
    """Train the ablation grid (variants x seeds) as MLflow runs; points already FINISHED are skipped."""
    from components.config import load_config
    from components.experiments.ablation.grid import run_ablation
    from components.experiments.ablation.variants import parse_variants

    try:
        chosen = parse_variants(variants) if variants else None
        base = load_config(config)
        rows = run_ablation(
            dataset,
            seeds,
            base,
            epochs=epochs,
            overrides=override or [],
            generator=generator,
            variants=chosen,
            experiment=experiment,
            output_root=output_root,
            keep_checkpoints=keep_checkpoints,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    typer.echo(json.dumps([row.__dict__ for row in rows], indent=2))


def report(
    output: Annotated[Path, typer.Option(help="markdown file to write")] = Path("docs/RESULTS.md"),
    experiment: ExperimentOption = "shapca-ablation",
    group: Annotated[str | None, typer.Option(help="only this group, e.g. twitter2017/blip2")] = None,
    all_settings: Annotated[
        bool,
        typer.Option(help="one row per setting; default: per (group, variant) only the setting with the newest run"),
    ] = False,
    baseline: Annotated[Path, typer.Option(help="config the settings are compared with")] = Path(
        "configs/default.yaml"
    ),
) -> None:
    """Render the ablation's MLflow runs as markdown: mean ± std per variant, per-type F1, runs and configs. An
    existing output with the report's marker line keeps what is above it (the hand-written summary)."""
    from components.config import config_identity, load_config
    from components.experiments.ablation.collect import collect_ablation_runs
    from components.experiments.ablation.report import keep_hand_written_summary, render_results_markdown
    from components.experiments.ablation.summary import summarize_runs
    from components.tracking.mlflow_setup import setup_tracking

    setup = setup_tracking(experiment)
    runs = collect_ablation_runs(experiment, group)
    summaries = summarize_runs(runs, latest_setting_only=not all_settings)
    baseline_identity = {k: v for k, v in config_identity(load_config(baseline)).items() if k != "train.seed"}
    command = command_line(
        "shapca experiment report", output=output, experiment=experiment, group=group, baseline=baseline
    ) + (" --all-settings" if all_settings else "")
    text = render_results_markdown(
        summaries,
        runs,
        experiment=experiment,
        tracking_uri=setup.tracking_uri,
        command=command,
        baseline=baseline_identity,
        baseline_name=str(baseline),
    )
    previous = output.read_text(encoding="utf-8") if output.exists() else None
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(keep_hand_written_summary(previous, text), encoding="utf-8")
    typer.echo(f"{len(summaries)} settings from {len(runs)} runs -> {output}")


def probe(
    model_uri: Annotated[str, typer.Option(help="a logged or registered model, e.g. models:/shapca-twitter2017/1")],
    dataset: Annotated[Dataset, typer.Option(help="the benchmark to probe on")] = "twitter2017",
    generator: Annotated[Generator, typer.Option(help="context generator")] = "blip2",
    split: Annotated[Split, typer.Option(help="the split whose batches are the games")] = "dev",
    batch_size: Annotated[int, typer.Option(help="batch of the games (the training batch size)")] = 32,
    permutations: Annotated[
        int | None, typer.Option(help="Monte Carlo K for the Shapley scores (default: the model's)")
    ] = None,
    data_dir: Annotated[Path, typer.Option(help="DVC-materialised data")] = Path("data"),
    output: Annotated[Path | None, typer.Option(help="also write the JSON here")] = None,
) -> None:
    """How sharply a model's alignment finds each text's own context (cosine and Shapley scores), and how much
    context its fusion gates let in; JSON on stdout. Models are scored as they are: nothing is logged."""
    from components.config import DataConfig
    from components.serving.pyfunc import load_shapca
    from components.tracking.mlflow_setup import setup_tracking
    from components.training.alignment_probe import probe_alignment
    from components.training.data import load_training_data

    setup_tracking("shapca-evaluations")  # points MLflow at the project's store; the probe logs nothing
    model = load_shapca(model_uri)
    data = load_training_data(DataConfig(dataset=dataset, data_dir=data_dir, context_generator=generator))
    try:
        result = probe_alignment(model, data, split, batch_size, permutations=permutations).as_dict()
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    command = command_line(
        "shapca experiment probe",
        model_uri=model_uri,
        dataset=dataset,
        generator=generator,
        split=split,
        batch_size=batch_size,
        permutations=permutations,
    )
    text = json.dumps(
        result | {"model_uri": model_uri, "dataset": dataset, "generator": generator, "command": command}, indent=2
    )
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n", encoding="utf-8")
    typer.echo(text)


def add_commands(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Ablation grid and the results report.",
        no_args_is_help=True,
        epilog="Example: shapca experiment ablation --dataset twitter2017 --seeds 3",
    )
    app.add_typer(group, name="experiment")
    group.command(
        "ablation", epilog="Example: shapca experiment ablation --dataset twitter2017 --seeds 3 --variants text,shapca"
    )(ablation)
    group.command("report", epilog="Example: shapca experiment report --output docs/RESULTS.md")(report)
    group.command(
        "probe", epilog="Example: shapca experiment probe --model-uri models:/shapca-twitter2017/1 --split dev"
    )(probe)
