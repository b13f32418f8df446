"""`shapca contexts`: write (or import) the image contexts of a dataset through the cache and publish a context set.

    shapca contexts --dataset twitter2017 --generator blip2                  # import the published BLIP-2 captions
    shapca contexts --dataset twitter2015 --generator mplug-owl
    shapca contexts --dataset twitter2017 --backend hf --model-path models/llava-1.5-7b-hf --image-dir images/
    shapca contexts --dataset mnre --backend openai --model llava-hf/llava-1.5-7b-hf \
        --base-url http://127.0.0.1:8000/v1 --image-dir images/

The command runs the steps of components.contexts.steps in this process (no Prefect server needed); the
generate-contexts flow in flows/ runs the same steps as sharded tasks for large runs.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cli._choices import Backend, Dataset, Device, Dtype


def contexts(
    dataset: Dataset = typer.Option("twitter2017", help="the benchmark whose images get contexts"),
    generator: str | None = typer.Option(
        None, help="precomputed: blip2 or mplug-owl; hf/openai: the set's name (default: the model's name)"
    ),
    backend: Backend = typer.Option("precomputed", help="import published contexts, or run a local/served LMM"),
    model_path: Path | None = typer.Option(None, help="hf: a local model directory (save_pretrained output)"),
    model: str | None = typer.Option(None, help="openai: the served model name"),
    base_url: str | None = typer.Option(None, help="openai: the server's base URL, e.g. http://127.0.0.1:8000/v1"),
    api_key_env: str | None = typer.Option(None, help="openai: NAME of the env variable holding the API key"),
    image_dir: Path | None = typer.Option(None, help="hf/openai: directory of <image_id>.jpg files"),
    data_dir: Path = typer.Option(Path("data"), help="the DVC-materialised benchmark data"),
    cache_dir: Path = typer.Option(Path(".cache/contexts"), help="cache records and published sets"),
    prompt: str | None = typer.Option(None, help="hf/openai: the instruction sent with each image"),
    max_new_tokens: int | None = typer.Option(None, help="hf/openai: the longest context, in tokens"),
    batch_size: int | None = typer.Option(None, help="hf: images per generate() call"),
    concurrency: int | None = typer.Option(None, help="openai: requests in flight"),
    device: Device | None = typer.Option(None, help="hf: where the model runs"),
    dtype: Dtype | None = typer.Option(None, help="hf: weights' precision (auto: bf16 on GPU)"),
    max_pixels: int | None = typer.Option(None, help="decompression-bomb guard: the largest image, in pixels"),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """Generate or import image contexts through the cache; print hits, misses, failures, coverage and the set."""
    from pydantic import ValidationError

    from components.contexts.settings import ContextsConfig
    from components.contexts.steps import report_text, run_contexts

    raw: dict = {"dataset": dataset, "backend": backend, "data_dir": data_dir, "cache_dir": cache_dir}
    optional = {"generator": generator, "image_dir": image_dir, "prompt": prompt, "max_pixels": max_pixels}
    raw |= {k: v for k, v in optional.items() if v is not None}
    if max_new_tokens is not None:
        raw["generation"] = {"max_new_tokens": max_new_tokens}
    hf = {"model_path": model_path, "batch_size": batch_size, "device": device, "dtype": dtype}
    openai = {"model": model, "base_url": base_url, "api_key_env": api_key_env, "concurrency": concurrency}
    raw["hf"] = {k: v for k, v in hf.items() if v is not None}
    raw["openai"] = {k: v for k, v in openai.items() if v is not None}
    try:
        cfg = ContextsConfig.model_validate(raw)
        cfg.generator_name()
    except (ValidationError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    _report, published = run_contexts(cfg, progress=progress)
    typer.echo(report_text(published))


def add_commands(app: typer.Typer) -> None:
    app.command(
        "contexts",
        epilog="Example: shapca contexts --dataset twitter2017 --generator blip2  (or --backend hf "
        "--model-path models/llava-1.5-7b-hf --image-dir images/)",
    )(contexts)
