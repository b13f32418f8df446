"""The Prefect tasks the flows call: each wraps one function of `components` with its failure and cache policy.

    task                  calls                                   retries               cache (results persisted)
    check-data-version    versioning.ensure_data_matches_pointer  yes: DVC remote (S3)  never: it is the check
    validate-dataset      validation.validate_dataset             no: deterministic     data version, inputs, suites
    train                 training_run.train_and_log              no: a failure is real this flow run only; resumes
    register-and-promote  registration.register_and_promote       yes: MLflow           the training run it registers
    evaluate-model-uri    model_evaluation.evaluate_model_uri     yes: MLflow download  never: it logs a new run

Retries happen only for failures another attempt can fix (`is_transient`: connections, timeouts, throttling, a
locked store); a bad config or a failed expectation fails at once instead of three times.

Why these caches are safe. Validation is a pure function of the data version (the DVC md5 just checked by
check-data-version, or a content hash), its parameters and the suite code (its source is hashed into the key).
Training is cached only within one flow run: a retried run (`prefect flow-run retry`, or Retry in the UI) skips a
training that finished and resumes one that did not from its last epoch checkpoint (`resume=True`), which lives in a
directory of that flow run's own (`with_run_output_dir`). Registration is keyed on the MLflow run it registers, so a
retried flow does not register a model that was registered already; a retry of the register task itself reuses
the version it created (`registry.register_version` looks it up by run and model), so no duplicate appears.

Results are written to Prefect's result storage: `~/.prefect/storage` for `shapca run`, and for the deployments an S3
bucket (`PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK=remote-file-system/shapca-results`, made by `python -m flows.provision`),
so that a retry on another worker host finds what the first attempt finished.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from prefect import task
from prefect.cache_policies import INPUTS, NO_CACHE, RUN_ID, TASK_SOURCE, CacheKeyFnPolicy
from prefect.context import TaskRunContext

from components.config import ExperimentConfig, apply_overrides
from components.data.versioning import DataVersion, content_version, ensure_data_matches_pointer
from components.runs.model_evaluation import evaluate_model_uri
from components.runs.registration import register_and_promote
from components.runs.training_run import TrainRunResult, train_and_log
from components.validation import ValidationReport, validate_dataset
from flows.progress import EpochProgress, forward_library_logs

COMPONENTS = Path(__file__).resolve().parents[1] / "components"


def _source_hash(*packages: str) -> str:
    """sha256 of the .py files of `components/<package>`: a suite or reader edit invalidates cached validations."""
    digest = hashlib.sha256()
    for package in packages:
        for file in sorted((COMPONENTS / package).rglob("*.py")):
            digest.update(file.read_bytes())
    return digest.hexdigest()


def _validation_code_key(task_run: TaskRunContext, inputs: dict) -> str:  # Prefect passes both positionally
    return _source_hash("validation", "data")


# MLflow error codes worth another try (its HTTP client has already retried 429/5xx answers by then).
TRANSIENT_MLFLOW_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED", "ABORTED"}
TRANSIENT_S3_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "503",
    "500",
}


def is_transient(exc: BaseException | None) -> bool:
    """True for failures another attempt can fix: connection errors and timeouts (sockets, requests, botocore),
    throttling or 5xx from S3, MLflow's unavailable/limit codes, a locked sqlite store; searched along the cause
    chain (DVC and MLflow wrap them). A bad argument, a missing file or a failed expectation is not transient."""
    import botocore.exceptions as boto

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (ConnectionError, TimeoutError, boto.ConnectionError, boto.HTTPClientError)):
            return True
        if isinstance(exc, OSError) and type(exc).__module__.startswith(("requests", "urllib3", "socket")):
            return True
        if getattr(exc, "error_code", None) in TRANSIENT_MLFLOW_CODES:
            return True
        if isinstance(exc, boto.ClientError) and exc.response.get("Error", {}).get("Code") in TRANSIENT_S3_CODES:
            return True
        if "database is locked" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _retry_if_transient(task, task_run, state) -> bool:
    return is_transient(state.result(raise_on_failure=False))


VALIDATION_CACHE = INPUTS + TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=_validation_code_key)
# `resume` differs between the first attempt and a retry, which must still find the finished training.
TRAINING_CACHE = (INPUTS - "resume") + TASK_SOURCE + RUN_ID


@task(
    name="check-data-version",
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=_retry_if_transient,
    cache_policy=NO_CACHE,
)
def check_data_version(project_root: Path) -> DataVersion:
    return ensure_data_matches_pointer(project_root)


@task(name="data-content-version", cache_policy=NO_CACHE)
def data_content_version(data_dir: Path, tracked: DataVersion) -> str:
    return content_version(data_dir, tracked)


@task(name="validate-dataset", cache_policy=VALIDATION_CACHE, persist_result=True)
def validate(
    dataset: str, data_dir: Path, context_generator: str, data_version: str, check_published_sizes: bool = True
) -> ValidationReport:
    # data_version is not read here: it is what keys the cache to the exact data validated.
    return validate_dataset(
        dataset, data_dir, context_generator=context_generator, check_published_sizes=check_published_sizes
    )


@task(name="train", cache_policy=TRAINING_CACHE, persist_result=True)
def train(cfg: ExperimentConfig, resume: bool = False) -> TrainRunResult:
    with forward_library_logs():
        return train_and_log(cfg, resume=resume, on_epoch_end=EpochProgress(cfg.data.dataset, cfg.train.epochs))


@task(
    name="register-and-promote",
    retries=3,
    retry_delay_seconds=10,
    retry_condition_fn=_retry_if_transient,
    cache_policy=INPUTS + TASK_SOURCE,
    persist_result=True,
)
def register_model(run: TrainRunResult, cfg: ExperimentConfig):
    return register_and_promote(run, cfg)


@task(
    name="evaluate-model-uri",
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=_retry_if_transient,
    cache_policy=NO_CACHE,
)
def evaluate(model_uri: str, dataset: str, split: str, data_dir: Path, context_generator: str) -> dict[str, float]:
    return evaluate_model_uri(model_uri, dataset, split, data_dir, context_generator=context_generator)


# Config plumbing between steps: pure functions of the flow parameters.


def resolve_config(config: ExperimentConfig, overrides: list[str] | None) -> ExperimentConfig:
    """`config` with `section.field=value` overrides applied (what `shapca run -o` and deployment runs pass)."""
    if not overrides:
        return config
    return ExperimentConfig.model_validate(apply_overrides(config.model_dump(mode="json"), list(overrides)))


def with_context_file(cfg: ExperimentConfig, path: str | Path) -> ExperimentConfig:
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"context_file": Path(path)})})


def with_run_output_dir(cfg: ExperimentConfig, flow_run_id) -> ExperimentConfig:
    """Checkpoints under `<train.output_dir>/flow-run-<id>`: a retried flow run resumes its own training, never
    another run's checkpoint left in a shared directory."""
    run_dir = Path(cfg.train.output_dir) / f"flow-run-{flow_run_id}"
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"output_dir": run_dir})})


def registered_model_uri(model_name: str, version: str) -> str:
    """`models:/<name>/<n>` for a version number, `models:/<name>@<alias>` for an alias (champion, challenger)."""
    return f"models:/{model_name}/{version}" if str(version).isdigit() else f"models:/{model_name}@{version}"
