"""The ablation grid: which part of Shap-CA buys what, as MLflow runs that an interrupted grid can resume.

Variants are config overrides on top of a base config (configs/default.yaml):

    1 text      text only                                   model.context_mode=none    model.alignment=none
    2 concat    text [SEP] context as one sequence          model.context_mode=concat  model.alignment=none
    3 fusion    separate context encoder + fusion, no align model.context_mode=fusion  model.alignment=none
    4 infonce   fusion + plain InfoNCE on cosine similarity model.context_mode=fusion  model.alignment=infonce
    5 shapca    fusion + Shapley InfoNCE (full Shap-CA)     model.context_mode=fusion  model.alignment=shapley

A grid point (variant, seed) is one `train_and_log` run, seed = base `train.seed` + i for i < seeds, tagged

    ablation.group=<dataset>/<generator>  ablation.variant=<key>  ablation.seed  ablation.config_hash
    ablation.setting_hash (the config hash without the seed: the runs a mean ± std is taken over)
    ablation.code_commit, ablation.code_dirty (the checkout when the grid process started: the code it runs)

A run's `lineage.git_commit` is HEAD when the run starts; a grid process imported its code when it started, so a commit
landing while it runs would tag its later runs with code they did not run. The report reads `ablation.code_commit`.

Identity of a run is its config, read back from the params `train_and_log` logs (`cfg.flat()`), without the keys
that say where things go rather than what is trained (`IDENTITY_EXCLUDED`): a grid point whose identity already has a
FINISHED run in the experiment is skipped, so rerunning an interrupted grid trains only what is missing. A point
whose own output directory names an unfinished run of the same identity with a checkpoint resumes that run from its
last epoch instead of starting over.

`collect_ablation_runs` (collect.py) reads the tagged runs back and `summarize_runs` (summary.py) aggregates mean ±
sample std over seeds per (group, variant, setting): test micro-F1, per-type test F1, dev F1 of the selected epoch,
best epoch, epochs run, wall time, commits.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from components.common.project_root import find_project_root
from components.config import ExperimentConfig, config_hash
from components.experiments.ablation.collect import duration_seconds
from components.experiments.ablation.lookup import (
    DEFAULT_EXPERIMENT,
    TAG_PREFIX,
    experiment_client,
    find_finished_run,
    unfinished_run_to_resume,
)
from components.experiments.ablation.variants import Variant, default_variants, group_name, point_config
from components.runs.training_run import train_and_log
from components.tracking.lineage import git_commit, git_dirty

log = logging.getLogger(__name__)


@dataclass
class AblationRow:
    group: str
    variant: str
    seed: int
    run_id: str
    action: str  # "trained" | "resumed" | "skipped" (a FINISHED run of the same config existed)
    config_hash: str
    test_f1: float | None
    dev_f1: float | None
    wall_seconds: float | None


def _tags(cfg: ExperimentConfig, variant: Variant, resumed: bool) -> dict[str, str]:
    return {
        f"{TAG_PREFIX}group": group_name(cfg),
        f"{TAG_PREFIX}variant": variant.key,
        f"{TAG_PREFIX}variant_number": str(variant.number),
        f"{TAG_PREFIX}seed": str(cfg.train.seed),
        f"{TAG_PREFIX}config_hash": config_hash(cfg),
        f"{TAG_PREFIX}setting_hash": config_hash(cfg, include_seed=False),
        **({f"{TAG_PREFIX}resumed": "true"} if resumed else {}),
    }


def run_ablation(
    dataset: str,
    seeds: int,
    base: ExperimentConfig,
    *,
    epochs: int | None = None,
    overrides: Sequence[str] = (),
    generator: str | None = None,
    variants: Sequence[Variant] | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    output_root: Path | None = None,
    keep_checkpoints: bool = False,
) -> list[AblationRow]:
    """Train every (variant, seed) point not already FINISHED in `experiment`; seed-major, so that an interrupted
    grid already holds every variant of its first seeds. A point is a measurement: its model is neither logged nor
    registered (`shapca train` with the same overrides makes one to keep), and without `keep_checkpoints` its
    checkpoints are deleted once its run is FINISHED."""
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    generator_name = generator or base.data.context_generator
    chosen = list(variants) if variants else default_variants(dataset, generator_name)
    tracked = base.model_copy(update={"tracking": base.tracking.model_copy(update={"experiment": experiment})})
    points = [
        (
            variant,
            point_config(
                tracked,
                variant,
                base.train.seed + i,
                dataset=dataset,
                generator=generator,
                epochs=epochs,
                overrides=overrides,
                output_root=output_root,
            ),
        )
        for i in range(seeds)
        for variant in chosen
    ]
    client, experiment_id = experiment_client(experiment)
    root = find_project_root()
    code_commit = git_commit(root)
    code = {f"{TAG_PREFIX}code_commit": code_commit, f"{TAG_PREFIX}code_dirty": str(git_dirty(root))}
    rows: list[AblationRow] = []
    for variant, cfg in tqdm(points, desc=f"ablation {dataset}", unit="run"):
        finished = find_finished_run(client, experiment_id, cfg)
        if finished is not None:
            log.info(
                "skip %s seed %d: FINISHED run %s has this config", variant.key, cfg.train.seed, finished.info.run_id
            )
            if finished.data.tags.get(f"{TAG_PREFIX}config_hash") != config_hash(cfg):
                # Finished before it could be tagged (the process died in between): tag it now.
                for key, value in _tags(cfg, variant, resumed=False).items():
                    client.set_tag(finished.info.run_id, key, value)
            metrics = finished.data.metrics
            rows.append(
                AblationRow(
                    group_name(cfg),
                    variant.key,
                    cfg.train.seed,
                    finished.info.run_id,
                    "skipped",
                    config_hash(cfg),
                    metrics.get("test_f1"),
                    metrics.get("best_dev_f1"),
                    duration_seconds(finished),
                )
            )
            continue
        resume_id = unfinished_run_to_resume(client, experiment_id, cfg)
        log.info(
            "%s %s seed %d -> %s", "resume" if resume_id else "train", variant.key, cfg.train.seed, cfg.train.output_dir
        )
        head = git_commit(root)
        if head != code_commit:
            log.warning(
                "HEAD moved from %s to %s since this grid started: this run executes %s (its %scode_commit tag), "
                "whatever its lineage.git_commit says",
                code_commit[:12],
                head[:12],
                code_commit[:12],
                TAG_PREFIX,
            )
        tags = {**_tags(cfg, variant, resumed=resume_id is not None), **code}
        result = train_and_log(cfg, resume=resume_id is not None, tags=tags)
        if not keep_checkpoints:
            shutil.rmtree(Path(cfg.train.output_dir) / "checkpoints", ignore_errors=True)
        rows.append(
            AblationRow(
                group_name(cfg),
                variant.key,
                cfg.train.seed,
                result.run_id,
                "resumed" if resume_id else "trained",
                config_hash(cfg),
                result.test_metrics.get("test_f1"),
                result.dev_metric,
                result.wall_seconds,
            )
        )
    return rows
