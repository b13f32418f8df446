"""`shapca bench shapley`: the Shapley estimator benchmark (components/model/bench.py) as one JSON document."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _ints(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def register(app: typer.Typer) -> None:
    bench = typer.Typer(help="Benchmarks.", no_args_is_help=True, epilog="Example: shapca bench shapley --skip-step")
    app.add_typer(bench, name="bench")

    @bench.command("shapley", epilog="Example: shapca bench shapley --ns 8,16 --ks 16,64 --skip-step")
    def shapley(
        ns: str = typer.Option("8,12,16,32,64", help="numbers of players N"),
        ks: str = typer.Option("16,64,256", help="numbers of permutations K (each also run reversed)"),
        dim: int = typer.Option(384, help="embedding width d"),
        seeds: int = typer.Option(5, help="seeds averaged for the relative error"),
        repeats: int = typer.Option(10, help="timed runs of the vectorised estimator per cell and sweep"),
        loop_repeats: int = typer.Option(3, help="sweeps over the grid; the loop runs once per cell and sweep"),
        data_dir: Path = typer.Option(Path("data"), help="real twitter2017 batch for the training step, if present"),
        threads: int = typer.Option(2, help="torch CPU threads"),
        skip_step: bool = typer.Option(False, help="skip timing the MiniLM training step"),
    ) -> None:
        """Print {"rows": [...], "alignment_share_of_step": float, "machine": str} as JSON on stdout."""
        from components.model.bench import run_shapley_benchmark

        result = run_shapley_benchmark(
            ns=_ints(ns), ks=_ints(ks), dim=dim, seeds=tuple(range(seeds)), repeats=repeats, loop_repeats=loop_repeats,
            data_dir=data_dir, threads=threads, include_step=not skip_step,
        )
        typer.echo(json.dumps(result, indent=2))
