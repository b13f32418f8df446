"""The score-tweets flow: batch scoring of a JSONL input with a registered model, its shards in parallel on Dask.

input (a file or s3://...) -> plan (the model version pinned, the input's sha256 and shards)
  -> score-shard x N on the Dask cluster (a part per shard; a part already written is skipped)
  -> write-manifest -> markdown artifact -> the manifest

The cluster: SHAPCA_DASK_ADDRESS (e.g. tcp://scheduler:8786), an existing one, or else a local cluster of
SHAPCA_DASK_WORKERS worker processes (default: one per core), one thread each, made for the run and torn down after.
Each worker process loads the model once (components/runs/batch_scoring.py) and scores every shard it is given.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import TaskRunner
from prefect_dask import DaskTaskRunner

from components.runs.batch_scoring import (
    OutputFormat,
    ScoringJob,
    ShardResult,
    plan_job,
    resolve_model,
    score_shard,
    write_manifest,
)
from components.tracking.registry import registered_model_name

DASK_ADDRESS_ENV = "SHAPCA_DASK_ADDRESS"
DASK_WORKERS_ENV = "SHAPCA_DASK_WORKERS"


def _retry_if_transient(task, task_run, state) -> bool:
    # flows.tasks imports the training and validation stack: imported only when a shard failed, so that a Dask worker
    # process, which imports this module to run its tasks, starts without it.
    from flows.tasks import is_transient

    return is_transient(state.result(raise_on_failure=False))


def dask_task_runner() -> TaskRunner[Any]:  # Any: Prefect's flow decorator wants PrefectFuture, not Dask's
    """An existing cluster when SHAPCA_DASK_ADDRESS names one, else a local one of worker processes."""
    address = os.environ.get(DASK_ADDRESS_ENV, "").strip()
    if address:
        return DaskTaskRunner(address=address)
    workers = int(os.environ.get(DASK_WORKERS_ENV, "").strip() or os.cpu_count() or 1)
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True})


@task(name="plan-scoring", retries=2, retry_delay_seconds=10, retry_condition_fn=_retry_if_transient)
def plan(
    input: str, output: str, model_name: str, version: str, lines_per_shard: int, output_format: OutputFormat
) -> ScoringJob:
    return plan_job(input, output, resolve_model(model_name, version), lines_per_shard, output_format)


@task(
    name="score-shard",
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=_retry_if_transient,
    cache_policy=NO_CACHE,  # the part on the output store is the cache: it survives a killed flow run
)
def score(job: ScoringJob, index: int) -> ShardResult:
    return score_shard(job, job.input.shards[index])


@task(name="write-manifest", retries=2, retry_delay_seconds=10, retry_condition_fn=_retry_if_transient)
def finish(job: ScoringJob, results: list[ShardResult]) -> dict:
    return write_manifest(job, results)


def summary_markdown(content: dict) -> str:
    model, counts, source = content["model"], content["counts"], content["input"]
    rows = [
        ("model", f"`{model['uri']}` ({model['requested']}), run `{model['run_id']}`"),
        ("input", f"`{source['url']}`: {source['lines']} lines, sha256 `{source['sha256']}`"),
        ("output", f"`{content['output']['url']}` ({content['output']['format']}, manifest.json)"),
        ("rows", f"{counts['rows']}: {counts['predicted']} predicted, {counts['errors']} with errors"),
        ("truncated", str(counts["truncated"])),
        ("shards", f"{counts['shards']} ({counts['shards_reused']} reused from an earlier run)"),
    ]
    return "# score-tweets\n\n| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


@flow(name="score-tweets", task_runner=dask_task_runner())
def score_tweets(
    input: str,
    output: str = "outputs/scores",
    dataset: str = "twitter2017",
    version: str = "champion",
    model_name: str | None = None,
    lines_per_shard: int = 1000,
    output_format: OutputFormat = "jsonl",
) -> dict:
    """Score every line of `input` (JSONL, a path or s3://...) with `models:/shapca-<dataset>@<version>` (a number or
    an alias); predictions and manifest.json go under `output` (a directory or s3://...)."""
    logger = get_run_logger()
    job = plan(
        str(input), str(output), model_name or registered_model_name(dataset), version, lines_per_shard, output_format
    )
    shards = len(job.input.shards)
    logger.info(
        "%s (%s): %d lines of %s (sha256 %s) in %d shards -> %s",
        job.model.uri,
        version,
        job.input.lines,
        job.input.url,
        job.input.sha256[:16],
        shards,
        job.output_url,
    )
    futures = [score.submit(job, i) for i in range(shards)]
    results: list[ShardResult] = []
    for future in as_completed(futures):
        result = future.result()
        results.append(result)
        logger.info(
            "shard %d/%d (lines %d-%d): %s, %d errors, %.1f s [%d/%d done]",
            result.index + 1,
            shards,
            result.first_line,
            result.first_line + result.rows - 1,
            "reused" if result.reused else "scored",
            result.errors,
            result.seconds,
            len(results),
            shards,
        )
    content = finish(job, results)
    create_markdown_artifact(summary_markdown(content), key="score-tweets", description=f"{job.model.uri} scores")
    logger.info("manifest: %s/manifest.json %s", job.output_url, content["counts"])
    return content


if __name__ == "__main__":
    import sys

    score_tweets(input=sys.argv[1], output=sys.argv[2] if len(sys.argv) > 2 else str(Path("outputs/scores")))
