"""`shapca bench shapley`: the Shapley estimator benchmark (components/benchmarks/shapley.py) as one JSON document.
`shapca bench step`: the per-phase cost of one CPU training step (components/benchmarks/step_profile.py) as JSON.
`shapca bench serve`: `mlflow models serve` throughput, latency and RSS around the hostile battery
(components/benchmarks/serving.py) as one JSON document."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Annotated

import typer

from cli._options import ConfigOption, OverrideOption, command_line


def _ints(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None


def step(
    config: ConfigOption = Path("configs/default.yaml"),
    override: OverrideOption = None,
    repeats: Annotated[int, typer.Option(help="timed steps (medians, min, max over these)")] = 10,
    warmup: Annotated[int, typer.Option(help="untimed steps first")] = 2,
    threads: Annotated[int, typer.Option(help="torch CPU threads")] = 2,
    output: Annotated[Path | None, typer.Option(help="also write the JSON here")] = None,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            help="name:section.field=value,... profiled on top of the base and --override, repeatable; the first is "
            "the baseline of the ratios (e.g. 'text:model.context_mode=none,model.alignment=none' 'full:')",
        ),
    ] = None,
) -> None:
    """Per-phase cost of one CPU training step on a real batch; JSON on stdout.

    Phases: text encoder, context encoder, Shapley + contrastive, fusion, head, backward, optimizer. With --variant,
    one profile per variant, one after the other, and each one's median step over the first one's."""
    from components.benchmarks.step_profile import parse_variant, run_step_profile, run_step_variants
    from components.config import load_config

    overrides = ["train.device=cpu", *(override or [])]
    command = command_line("shapca bench step", config=config, repeats=repeats, warmup=warmup, threads=threads)
    command += "".join(f" --override {shlex.quote(o)}" for o in override or [])
    if variant:
        try:
            parsed = dict(parse_variant(v) for v in variant)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from error
        if len(parsed) != len(variant):
            raise typer.BadParameter("--variant names must differ")
        configs = {name: load_config(config, [*overrides, *extra]) for name, extra in parsed.items()}
        result = run_step_variants(configs, repeats=repeats, warmup=warmup, threads=threads)
        result["command"] = command + "".join(f" --variant {shlex.quote(v)}" for v in variant)
    else:
        profile = run_step_profile(load_config(config, overrides), repeats=repeats, warmup=warmup, threads=threads)
        result = profile.as_dict() | {"command": command}
    text = json.dumps(result, indent=2)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n", encoding="utf-8")
    typer.echo(text)


def add_commands(app: typer.Typer) -> None:
    bench = typer.Typer(help="Benchmarks.", no_args_is_help=True, epilog="Example: shapca bench shapley --skip-step")
    app.add_typer(bench, name="bench")
    bench.command("step", epilog="Example: shapca bench step --repeats 5 --output perf/step.json")(step)

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
        coverage_ns: str = typer.Option("8,10,32,64", help="token coverage game: numbers of players (and targets) N"),
        coverage_ts: str = typer.Option("32,96", help="token coverage game: tokens per target T"),
        coverage_exact_limit: int = typer.Option(10, help="token coverage game: largest N timed against enumeration"),
    ) -> None:
        """Print {"rows": [...], "coverage_rows": [...], "alignment_share_of_step": float, "machine": str} as JSON."""
        from components.benchmarks.shapley import run_shapley_benchmark

        result = run_shapley_benchmark(
            ns=_ints(ns),
            ks=_ints(ks),
            dim=dim,
            seeds=tuple(range(seeds)),
            repeats=repeats,
            loop_repeats=loop_repeats,
            data_dir=data_dir,
            threads=threads,
            include_step=not skip_step,
            coverage_ns=_ints(coverage_ns),
            coverage_ts=_ints(coverage_ts),
            coverage_exact_limit=coverage_exact_limit,
        )
        typer.echo(json.dumps(result, indent=2))

    @bench.command(
        "serve",
        epilog="Example: shapca bench serve --requests 40 --output docs/perf/serve-new.json; with a trained model's "
        "weights and the F1 of each variant: shapca bench serve --model-dir outputs/twitter2017/best "
        "--f1-dataset twitter2017 --output docs/perf/serve-variants.json",
    )
    def serve(
        model_uri: str = typer.Option(
            "",
            help="a logged or registered model; default: a fresh MiniLM NER model "
            "of the paper's config (random heads) logged to a temporary sqlite store",
        ),
        tracking_uri: str = typer.Option("", help="the store of --model-uri"),
        model_dir: Path = typer.Option(
            None, help="a trained Twitter-2017 model's save_pretrained directory, logged by this code and served"
        ),
        code_root: Path = typer.Option(
            None, help="checkout whose `components` logs and serves the model (another commit)"
        ),
        requests: int = typer.Option(40, help="timed sequential 4-row requests"),
        variants: str = typer.Option(
            "plain,int8",
            help="inference variants served side by side (one server each, requests interleaved); "
            "the first also takes the hostile battery. A commit without the option: plain",
        ),
        f1_dataset: str = typer.Option("", help="also score each variant in process on this dataset's test split"),
        data_dir: Path = typer.Option(Path("data"), help="where --f1-dataset's data lives"),
        context_generator: str = typer.Option("blip2", help="the contexts --f1-dataset's rows are scored with"),
        encoder: str = typer.Option("minilm", help="text encoder of the default model: minilm or a local directory"),
        output: Path = typer.Option(None, help="also write the JSON here"),
    ) -> None:
        """Print {"rows_per_second", "p50_ms", "p95_ms", "rss_before_mb", "rss_after_battery_mb", "battery",
        "variants": {variant: {"rows_per_second", "p50_ms", "p95_ms", "test_micro_f1"?}}, ...}."""
        import dataclasses
        import subprocess
        import tempfile

        from components.benchmarks.serving import compare_variants, log_bench_model, run_serve_benchmark, score_variants
        from components.machine import machine_description
        from components.serving.harness import start_serve
        from components.serving.inference import INFERENCE_ENV, INFERENCE_VARIANTS

        load_before = os.getloadavg()  # what else the machine runs, before this benchmark adds its own
        names = [name.strip() for name in variants.split(",") if name.strip()]
        bad = [name for name in names if name not in INFERENCE_VARIANTS]
        if not names or bad or len(set(names)) != len(names):
            raise typer.BadParameter(
                f"--variants: distinct names among {', '.join(INFERENCE_VARIANTS)}, got {variants!r}"
            )
        with tempfile.TemporaryDirectory(prefix="shapca-bench-serve-") as tmp:
            root = Path(tmp)
            if not model_uri:
                model_uri, tracking_uri = log_bench_model(root, encoder, code_root, model_dir)
            servers = {}
            try:
                for name in names:
                    servers[name] = start_serve(
                        model_uri, tracking_uri, root / f"serve-{name}.log", {INFERENCE_ENV: name}, code_root
                    )
                side_by_side = compare_variants({name: server.url for name, server in servers.items()}, requests)
                for name in names[1:]:  # the battery's server alone on the machine
                    servers.pop(name).stop()
                result = run_serve_benchmark(
                    servers[names[0]], requests=requests, battery_timeout=65.0, after_budget_s=60.0
                )
            finally:
                for server in servers.values():
                    server.stop()
            if f1_dataset:
                import mlflow

                mlflow.set_tracking_uri(tracking_uri)
                for name, scores in score_variants(model_uri, names, f1_dataset, data_dir, context_generator).items():
                    kept = ("test_precision", "test_recall", "test_f1")
                    side_by_side[name] |= {key: round(scores[key], 4) for key in kept}
        where = code_root or Path.cwd()
        commit = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        document = {
            "kind": "serve_benchmark",
            "model": model_uri if tracking_uri else "",
            "encoder": encoder,
            "model_dir": str(model_dir) if model_dir else None,
            "server_commit": commit,
            "machine": machine_description(),
            "load_average_before": [round(v, 2) for v in load_before],
            **dataclasses.asdict(result),
            "variants": side_by_side,
            "f1_dataset": f1_dataset or None,
        }
        text = json.dumps(document, indent=2)
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(text + "\n")
        typer.echo(text)
