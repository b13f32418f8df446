"""Provision a Prefect server for the shapca deployments, idempotently: the work pools and the S3 result storage.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.provision [--results s3://shapca/prefect-results]
        [--zombie-after 120] [--retry-after 20] [--max-attempts 3]

- work pools `gpu` and `cpu` (process type; the names every deployment in prefect.yaml and every worker in infra/
  uses);
- the block `remote-file-system/shapca-results`, where task results go on S3, so that a retried flow run on any worker
  host finds what its first attempt finished. The deployments select it with
  PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK (prefect.yaml). s3fs takes the endpoint (AWS_ENDPOINT_URL) and the credentials
  from the worker's environment: the block holds neither;
- two automations that recover from a lost worker without a person (`--zombie-after`, `--retry-after`,
  `--max-attempts` tune them; run the command again to change them):
  - *crash flow runs without heartbeats*: a shapca flow run that stops sending `prefect.flow-run.heartbeat` events
    (every PREFECT_FLOWS_HEARTBEAT_FREQUENCY = 30 s, set in prefect.yaml) for `--zombie-after` seconds is marked
    Crashed, which also frees its deployment concurrency slot. Its process is gone (a preempted node, a killed pod)
    or cut off from the API for that long; if it is only cut off, it stops itself when it sees the Crashed state
    (flows/attempt_watch.py). The window must exceed the heartbeat interval plus the Prefect outages to ride out;
  - *retry crashed flow runs*: a deployment's shapca flow run that has not started again (Pending, Running) or ended
    otherwise within `--retry-after` seconds of being Crashed is rescheduled (AwaitingRetry) for any worker of its
    pool, as long as it has run fewer than `--max-attempts` times. A retry sent by hand right after a crash does not
    stop it: the crash report a worker sends again after cleaning up a killed process (about 10-25 s later) would
    undo that retry, and the automation then reschedules the run.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import timedelta

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.exceptions import ObjectAlreadyExists
from prefect.filesystems import RemoteFileSystem
from prefect.workers.process import ProcessWorker

# Each pool and how many flow runs it runs at once: one training at a time on the GPU pool (every deployment on it,
# gpu and weekly-retrain alike); a run marked Crashed stops counting, so its retry can take the slot. None: no limit.
WORK_POOLS: dict[str, int | None] = {"gpu": 1, "cpu": None}
RESULTS_BLOCK = "shapca-results"
DEFAULT_RESULTS_URL = "s3://shapca/prefect-results"
TAG = "shapca"  # every deployment in prefect.yaml carries it, and so do their flow runs
ZOMBIE_AUTOMATION = "shapca: crash flow runs without heartbeats"
RETRY_AUTOMATION = "shapca: retry crashed flow runs"
# The states that show a crashed flow run is being handled: it runs again, or it ended otherwise (event names are
# state names). Not the Scheduled ones (a retry by hand, AwaitingRetry, Late, AwaitingConcurrencySlot): a worker's
# late second crash report can undo a retry sent by hand, and Prefect keeps one bucket per flow run open for the whole
# window after the first Crashed, so that second Crashed starts no window of its own: had the Scheduled counted, the
# run would stay Crashed. Rescheduling a run that is Scheduled already changes nothing.
AFTER_CRASH = {
    f"prefect.flow-run.{name}"
    for name in (
        "Pending",
        "Running",
        "Retrying",
        "Cancelling",
        "Cancelled",
        "Completed",
        "Failed",
        "Paused",
        "Suspended",
    )
}
FINAL = {f"prefect.flow-run.{name}" for name in ("Completed", "Failed", "Cancelled", "Crashed")}


@dataclass(frozen=True)
class Recovery:
    """The settings of the two recovery automations (see the module docstring)."""

    zombie_after_s: int = 120  # 4 heartbeats of 30 s: Crashed <= 2 min after the process died
    retry_after_s: int = 20  # a worker reports a killed process twice, the second time after its cleanup (~10 s)
    max_attempts: int = 3  # a flow run is run at most this many times by the retry automation

    def __post_init__(self):
        if self.zombie_after_s < 60 or self.retry_after_s < 10 or self.max_attempts < 1:
            raise ValueError(
                f"{self}: expected zombie_after_s >= 60 (two heartbeats of 30 s), retry_after_s >= 10 (Prefect's "
                "minimum for a proactive trigger) and max_attempts >= 1"
            )


def recovery_automations(recovery: Recovery) -> list[AutomationCore]:
    tagged = {"prefect.resource.role": "tag", "prefect.resource.id": f"prefect.tag.{TAG}"}
    zombie = AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description=(
            f"A {TAG} flow run that sent no heartbeat for {recovery.zombie_after_s} s is marked Crashed "
            "(flows/provision.py)."
        ),
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat"} | FINAL,
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=tagged,
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=recovery.zombie_after_s),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"No heartbeat for {recovery.zombie_after_s} s: its process or host is gone",
            )
        ],
    )
    retry = AutomationCore(
        name=RETRY_AUTOMATION,
        description=(
            f"A {TAG} deployment's flow run Crashed for {recovery.retry_after_s} s is retried, up to "
            f"{recovery.max_attempts} attempts (flows/provision.py)."
        ),
        trigger=EventTrigger(
            after={"prefect.flow-run.Crashed"},
            expect=AFTER_CRASH,
            # The run count is the Crashed run's: a run that never started (0) or used its attempts is left alone.
            match={
                "prefect.resource.id": "prefect.flow-run.*",
                "prefect.run-count": [str(n) for n in range(1, recovery.max_attempts)],
            },
            match_related=[tagged, {"prefect.resource.role": "deployment"}],
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=recovery.retry_after_s),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.SCHEDULED,
                name="AwaitingRetry",
                message=f"Crashed for {recovery.retry_after_s} s: retried by the automation {RETRY_AUTOMATION!r}",
            )
        ],
    )
    return [zombie, retry]


def put_automation(client, automation: AutomationCore) -> str:
    """Create `automation`, or update the one of that name (and remove duplicates): idempotent."""
    existing = client.read_automations_by_name(automation.name)
    if not existing:
        client.create_automation(automation)
        return "created"
    keep, *duplicates = existing
    client.update_automation(keep.id, automation)
    for duplicate in duplicates:
        client.delete_automation(duplicate.id)
    return "updated"


def provision(results_url: str = DEFAULT_RESULTS_URL, recovery: Recovery | None = None) -> list[str]:
    """Create what is missing; returns one line per object, saying whether it was created or already there."""
    recovery = recovery or Recovery()
    lines = []
    with get_client(sync_client=True) as client:
        for pool, limit in WORK_POOLS.items():
            try:
                # With the process worker's own job template, as `prefect work-pool create --type process` makes it.
                template = ProcessWorker.get_default_base_job_template()
                client.create_work_pool(
                    WorkPoolCreate(name=pool, type="process", base_job_template=template, concurrency_limit=limit)
                )
                lines.append(f"work pool {pool}: created, concurrency limit {limit}")
            except ObjectAlreadyExists:
                client.update_work_pool(pool, WorkPoolUpdate(concurrency_limit=limit))
                lines.append(f"work pool {pool}: exists, concurrency limit {limit}")
        for automation in recovery_automations(recovery):
            lines.append(f"automation {automation.name!r}: {put_automation(client, automation)}")
    RemoteFileSystem(basepath=results_url).save(RESULTS_BLOCK, overwrite=True)
    lines.append(f"result storage remote-file-system/{RESULTS_BLOCK}: {results_url}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=DEFAULT_RESULTS_URL, help="S3 URL for task results")
    defaults = Recovery()
    parser.add_argument(
        "--zombie-after",
        type=int,
        default=defaults.zombie_after_s,
        help="seconds without a heartbeat before a flow run is marked Crashed",
    )
    parser.add_argument(
        "--retry-after", type=int, default=defaults.retry_after_s, help="seconds Crashed before the automatic retry"
    )
    parser.add_argument(
        "--max-attempts", type=int, default=defaults.max_attempts, help="attempts of a flow run, retries included"
    )
    args = parser.parse_args()
    for line in provision(args.results, Recovery(args.zombie_after, args.retry_after, args.max_attempts)):
        print(line)


if __name__ == "__main__":
    main()
