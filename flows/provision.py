"""Provision a Prefect server for the shapca deployments, idempotently: the work pools and the S3 result storage.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.provision [--results s3://shapca/prefect-results]

- work pools `gpu` and `cpu` (process type; the names every deployment in prefect.yaml and every worker in infra/
  uses);
- the block `remote-file-system/shapca-results`, where task results go on S3, so that a retried flow run on any worker
  host finds what its first attempt finished. The deployments select it with
  PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK (prefect.yaml). s3fs takes the endpoint (AWS_ENDPOINT_URL) and the credentials
  from the worker's environment: the block holds neither.
"""

from __future__ import annotations

import argparse

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists
from prefect.filesystems import RemoteFileSystem
from prefect.workers.process import ProcessWorker

WORK_POOLS = ("gpu", "cpu")
RESULTS_BLOCK = "shapca-results"
DEFAULT_RESULTS_URL = "s3://shapca/prefect-results"


def provision(results_url: str = DEFAULT_RESULTS_URL) -> list[str]:
    """Create what is missing; returns one line per object, saying whether it was created or already there."""
    lines = []
    with get_client(sync_client=True) as client:
        for pool in WORK_POOLS:
            try:
                # With the process worker's own job template, as `prefect work-pool create --type process` makes it.
                template = ProcessWorker.get_default_base_job_template()
                client.create_work_pool(WorkPoolCreate(name=pool, type="process", base_job_template=template))
                lines.append(f"work pool {pool}: created")
            except ObjectAlreadyExists:
                lines.append(f"work pool {pool}: exists")
    RemoteFileSystem(basepath=results_url).save(RESULTS_BLOCK, overwrite=True)
    lines.append(f"result storage remote-file-system/{RESULTS_BLOCK}: {results_url}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=DEFAULT_RESULTS_URL, help="S3 URL for task results")
    for line in provision(parser.parse_args().results):
        print(line)


if __name__ == "__main__":
    main()
