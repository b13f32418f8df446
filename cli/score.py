"""`shapca score`: the score-tweets flow (batch scoring on Dask) from this process, against PREFECT_API_URL when set,
else a temporary local Prefect server (as `shapca run`)."""

from __future__ import annotations

import json
import os
from typing import Annotated, Literal

import typer

from cli._choices import Dataset
from cli.run import EPHEMERAL_STARTUP_TIMEOUT_S, temporary_server_settings

Format = Literal["jsonl", "parquet"]


def score(
    input: Annotated[str, typer.Option(help="JSONL, a path or s3://bucket/key: one object per line with `text`")],
    output: Annotated[str, typer.Option(help="where the parts and manifest.json go: a directory or s3://...")] = (
        "outputs/scores"
    ),
    dataset: Annotated[Dataset, typer.Option(help="scores with models:/shapca-<dataset>")] = "twitter2017",
    version: Annotated[str, typer.Option(help="a version number or an alias")] = "champion",
    lines_per_shard: Annotated[int, typer.Option(min=1, help="input lines per shard (a task, and a part)")] = 1000,
    format: Annotated[Format, typer.Option("--format", help="the parts' format")] = "jsonl",
) -> None:
    """Score every line of a JSONL input with a registered model, its shards in parallel on a Dask cluster
    (SHAPCA_DASK_ADDRESS, or a local one); a rerun skips the shards already written. Prints the manifest."""
    temporary_server_settings()
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.score_tweets import score_tweets

    api_url = PREFECT_API_URL.value()
    if not api_url:
        # One temporary server, named in the environment the Dask workers inherit: otherwise each worker process would
        # start a temporary server of its own (a minute each on 2 cores) and report its task runs there.
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()
        server.start(timeout=EPHEMERAL_STARTUP_TIMEOUT_S)  # stopped at exit
        api_url = os.environ["PREFECT_API_URL"] = server.api_url
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        content = score_tweets(
            input=input,
            output=output,
            dataset=dataset,
            version=version,
            lines_per_shard=lines_per_shard,
            output_format=format,
        )
    typer.echo(json.dumps(content, indent=2))


def add_commands(app: typer.Typer) -> None:
    app.command(
        "score",
        epilog="Example: shapca score --input tweets.jsonl --output outputs/scores  "
        '(a line: {"id": "1", "text": "Obama visits Paris"})',
    )(score)
