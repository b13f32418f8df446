"""The generate-contexts flow: image contexts for a whole dataset, sharded over a task runner.

    list image ids -> shard them -> map one task over each shard (cache lookups + generation of the misses)
    -> publish the context set -> markdown artifact (coverage per split, cache hits, failures)

Every task calls one function of components.contexts.steps; this module holds no business logic.

Task runner: a thread pool by default, which suits the openai backend (I/O bound) and the precomputed one; the hf
backend shares one loaded model between the threads and generates one batch at a time. On a cluster, give each worker
its own model by swapping the runner (install prefect-dask or prefect-ray first):

    from prefect_dask import DaskTaskRunner
    flow = generate_contexts_flow.with_options(task_runner=DaskTaskRunner(address="tcp://scheduler:8786"))
    # or: from prefect_ray import RayTaskRunner; ...with_options(task_runner=RayTaskRunner(address="ray://head:10001"))
    flow(config=ContextsConfig(dataset="twitter2015", backend="hf", ...), num_shards=64)

Each worker process builds the generator once (steps.shared_generator) and writes to the same cache: an S3 URL
(`config.cache_url`, default $SHAPCA_CONTEXT_CACHE) that every worker host reaches, or a directory on a shared file
system. Records are written atomically and keyed by content, so concurrent workers never corrupt or duplicate one
another's work.
"""

from __future__ import annotations

import re
from typing import cast
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import unmapped

from components.contexts import steps
from components.contexts.context_set import PublishedSet
from components.contexts.generate import GenerationReport
from components.contexts.settings import ContextsConfig

# Our cache is the cache: Prefect's input hashing of thousands of ids (and of the config) would only cost time.


@task(name="list-image-ids", cache_policy=NO_CACHE)
def list_image_ids(config: ContextsConfig, limit_per_split: int | None = None) -> dict[str, list[str]]:
    return steps.limit_ids(steps.list_image_ids(config), limit_per_split)


@task(name="shard-image-ids", cache_policy=NO_CACHE)
def shard_image_ids(split_ids: dict[str, list[str]], num_shards: int) -> list[list[str]]:
    return steps.shard_ids(steps.unique_ids(split_ids), num_shards)


@task(name="generate-shard", cache_policy=NO_CACHE)
def generate_shard(config: ContextsConfig, image_ids: list[str]) -> GenerationReport:
    report = steps.run_shard(config, image_ids, progress=False)
    get_run_logger().info(report.summary())
    return report


@task(name="publish-context-set", cache_policy=NO_CACHE)
def publish_context_set(
    config: ContextsConfig, reports: list[GenerationReport], split_ids: dict[str, list[str]]
) -> PublishedSet:
    return steps.publish(config, steps.merge_reports(reports), split_ids)


def _artifact_key(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


# Prefect types `task_runner` as TaskRunner[PrefectFuture], invariantly: its own ThreadPoolTaskRunner does not match.
@flow(name="generate-contexts", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=True)  # type: ignore[arg-type]
def generate_contexts_flow(
    config: ContextsConfig | None = None, num_shards: int | None = None, limit_per_split: int | None = None
) -> dict:
    """Contexts for every image of `config.dataset`; returns the published set's path, content hash and coverage."""
    config = config or ContextsConfig()
    name = f"{config.dataset}-{config.generator_name()}"
    split_ids = list_image_ids(config, limit_per_split)
    shards = shard_image_ids(split_ids, num_shards or config.num_shards)
    progress_id = cast(  # from sync code: the id, not a coroutine
        UUID,
        create_progress_artifact(
            0.0, key=_artifact_key(f"contexts-progress-{name}"), description=f"shards of {name} done"
        ),
    )
    futures = generate_shard.map(unmapped(config), shards)  # a pydantic model iterates its fields: unmapped
    reports, done = [], 0
    for future in as_completed(futures):
        reports.append(future.result())
        done += 1
        update_progress_artifact(progress_id, 100.0 * done / len(futures))
    published = publish_context_set(config, reports, split_ids)
    create_markdown_artifact(
        steps.report_markdown(published),
        key=_artifact_key(f"contexts-{name}"),
        description=f"Context set {name}: coverage per split, cache hits and failures",
    )
    print(steps.report_text(published))
    return {
        "path": str(published.path),
        "manifest_path": str(published.manifest_path),
        "content_hash": published.content_hash,
        "coverage": published.manifest["coverage"],
        "run": published.manifest["run"],
    }


if __name__ == "__main__":
    generate_contexts_flow()
