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

Identity of a run is its config, read back from the params `train_and_log` logs (`cfg.flat()`), without the keys
that say where things go rather than what is trained (`IDENTITY_EXCLUDED`): a grid point whose identity already has a
FINISHED run in the experiment is skipped, so rerunning an interrupted grid trains only what is missing. A point
whose own output directory names an unfinished run of the same identity with a checkpoint resumes that run from its
last epoch instead of starting over.

`summarize_ablation` reads the tagged runs back and aggregates mean ± sample std over seeds per (group, variant,
setting): test micro-F1, per-type test F1, dev F1 of the selected epoch, best epoch, epochs run, wall time, commits.
"""

from __future__ import annotations

import logging
import shutil
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.config import (
    SEED_KEY,
    ExperimentConfig,
    apply_overrides,
    config_hash,
    config_identity,
    identity_excluded,
    identity_hash,
)
from components.data.datasets import get_spec

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "shapca-ablation"
# Keys that say where a run reads or writes, or how it is tracked, not what it trains.
TAG_PREFIX = "ablation."


@dataclass(frozen=True)
class Variant:
    number: int
    key: str
    label: str
    overrides: tuple[str, ...]

    @property
    def needs_contexts(self) -> bool:
        return self.key != "text"


VARIANTS: dict[str, Variant] = {
    v.key: v
    for v in (
        Variant(1, "text", "text only", ("model.context_mode=none", "model.alignment=none")),
        Variant(2, "concat", "context-concat (text [SEP] context)",
                ("model.context_mode=concat", "model.alignment=none")),
        Variant(3, "fusion", "fusion, no alignment", ("model.context_mode=fusion", "model.alignment=none")),
        Variant(4, "infonce", "fusion + InfoNCE on cosine", ("model.context_mode=fusion", "model.alignment=infonce")),
        Variant(5, "shapca", "full Shap-CA (fusion + Shapley InfoNCE)",
                ("model.context_mode=fusion", "model.alignment=shapley")),
    )
}
_BY_NUMBER = {v.number: v for v in VARIANTS.values()}
_VARIANT_KEYS = {o.partition("=")[0] for v in VARIANTS.values() for o in v.overrides}


def parse_variants(text: str) -> list[Variant]:
    """`"1,2,5"` or `"text,shapca"` (mixed is fine) -> variants in the order given."""
    chosen: list[Variant] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        variant = _BY_NUMBER.get(int(part)) if part.isdigit() else VARIANTS.get(part)
        if variant is None:
            known = ", ".join(f"{v.number}={v.key}" for v in VARIANTS.values())
            raise ValueError(f"unknown ablation variant {part!r}: expected one of {known}")
        if variant not in chosen:
            chosen.append(variant)
    if not chosen:
        raise ValueError(f"no ablation variants in {text!r}")
    return chosen


def default_variants(dataset: str, generator: str) -> list[Variant]:
    """The grid of issue 7: all five on Twitter-2017 with BLIP-2, concat vs full with mPLUG-Owl, text vs full on
    Twitter-2015, text only where no published contexts describe the images (MNRE and mnre-joint)."""
    if not get_spec(dataset).publishes_contexts():
        return [VARIANTS["text"]]
    if dataset == "twitter2015":
        return [VARIANTS["text"], VARIANTS["shapca"]]
    if generator == "mplug-owl":
        return [VARIANTS["concat"], VARIANTS["shapca"]]
    return list(VARIANTS.values())


# -- identity -----------------------------------------------------------------------------------------------------


def matches(params: dict[str, str], identity: dict[str, str]) -> bool:
    """Whether a run's params hold exactly this identity (a key the run lacks is a mismatch)."""
    return all(params.get(k) == v for k, v in identity.items())


def context_source(cfg: ExperimentConfig) -> str:
    """Where a run's contexts come from: a context file's stem, the generator, or "none"."""
    if cfg.data.context_file is not None:
        return Path(cfg.data.context_file).stem
    if not get_spec(cfg.data.dataset).publishes_contexts(cfg.data.context_generator):
        return "none"
    return cfg.data.context_generator


def group_name(cfg: ExperimentConfig) -> str:
    return f"{cfg.data.dataset}/{context_source(cfg)}"


# -- the grid -----------------------------------------------------------------------------------------------------


def point_config(
    base: ExperimentConfig,
    variant: Variant,
    seed: int,
    *,
    dataset: str | None = None,
    generator: str | None = None,
    epochs: int | None = None,
    overrides: Sequence[str] = (),
    output_root: Path | None = None,
) -> ExperimentConfig:
    """The config of one grid point: base, then dataset/generator/epochs, then extra overrides, then the variant."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in _VARIANT_KEYS:
            raise ValueError(f"override {item!r}: {key} is what the ablation variants set; choose variants instead")
        if key == SEED_KEY:
            raise ValueError(f"override {item!r}: seeds are set by the grid (base train.seed + i); use --seeds")
    raw: dict[str, Any] = base.model_dump(mode="json")
    head = [f"data.dataset={dataset}"] if dataset else []
    head += [f"data.context_generator={generator}"] if generator else []
    head += [f"train.epochs={epochs}"] if epochs is not None else []
    raw = apply_overrides(raw, [*head, *overrides, *variant.overrides, "tracking.register_model=false",
                                 "tracking.log_model=false"])
    raw["train"]["seed"] = seed
    cfg = ExperimentConfig.model_validate(raw)
    if variant.needs_contexts and context_source(cfg) == "none":
        raise ValueError(
            f"variant {variant.number} ({variant.key}) reads image contexts, but {cfg.data.dataset} with "
            f"data.context_generator={cfg.data.context_generator} has none: pass data.context_file=<a context set "
            "written by `shapca contexts`> as an override, or choose variant 1 (text)"
        )
    root = Path(output_root) if output_root is not None else Path(cfg.train.output_dir) / "ablation"
    out = root / group_name(cfg).replace("/", "-") / variant.key / f"seed{seed}"
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"output_dir": out})})


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


def _experiment_id(experiment: str) -> tuple[Any, str]:
    from mlflow import MlflowClient

    from components.tracking.mlflow_setup import setup_tracking

    setup = setup_tracking(experiment)
    return MlflowClient(tracking_uri=setup.tracking_uri), setup.experiment_id


def _quote(value: str) -> str:
    return "'" + value.replace("'", "\\'") + "'"


def find_finished_run(client, experiment_id: str, cfg: ExperimentConfig):
    """The newest FINISHED run in the experiment whose params hold this config's identity, or None."""
    identity = config_identity(cfg)
    # Narrow on the server, match exactly here: a filter on every key would be long and brittle.
    query = (
        f"attributes.status = 'FINISHED' and params.`data.dataset` = {_quote(identity['data.dataset'])} "
        f"and params.`{SEED_KEY}` = {_quote(identity[SEED_KEY])}"
    )
    for run in _search(client, experiment_id, query, order_by=["attributes.start_time DESC"]):
        if matches(run.data.params, identity):
            return run
    return None


def unfinished_run_to_resume(client, experiment_id: str, cfg: ExperimentConfig) -> str | None:
    """The run id in the point's output dir when that run is unfinished, of the same identity, with a checkpoint."""
    from mlflow.exceptions import MlflowException

    from components.training.checkpoint import has_checkpoint

    out = Path(cfg.train.output_dir)
    id_file = out / "mlflow_run_id"
    if not id_file.is_file() or not has_checkpoint(out / "checkpoints"):
        return None
    try:
        run = client.get_run(id_file.read_text().strip())
    except MlflowException:
        return None  # a run of another store, or deleted: start afresh
    if run.info.experiment_id != experiment_id or run.info.status == "FINISHED":
        return None
    return run.info.run_id if matches(run.data.params, config_identity(cfg)) else None


def _search(client, experiment_id: str, query: str, order_by: list[str] | None = None) -> Iterable:
    token = None
    while True:
        page = client.search_runs([experiment_id], query, max_results=1000, order_by=order_by, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


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
    from tqdm.auto import tqdm

    from components.training.pipeline import train_and_log

    if seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    generator_name = generator or base.data.context_generator
    chosen = list(variants) if variants else default_variants(dataset, generator_name)
    tracked = base.model_copy(update={"tracking": base.tracking.model_copy(update={"experiment": experiment})})
    points = [
        (variant, point_config(tracked, variant, base.train.seed + i, dataset=dataset, generator=generator,
                               epochs=epochs, overrides=overrides, output_root=output_root))
        for i in range(seeds)
        for variant in chosen
    ]
    client, experiment_id = _experiment_id(experiment)
    rows: list[AblationRow] = []
    for variant, cfg in tqdm(points, desc=f"ablation {dataset}", unit="run"):
        finished = find_finished_run(client, experiment_id, cfg)
        if finished is not None:
            log.info("skip %s seed %d: FINISHED run %s has this config", variant.key, cfg.train.seed,
                     finished.info.run_id)
            if finished.data.tags.get(f"{TAG_PREFIX}config_hash") != config_hash(cfg):
                # Finished before it could be tagged (the process died in between): tag it now.
                for key, value in _tags(cfg, variant, resumed=False).items():
                    client.set_tag(finished.info.run_id, key, value)
            metrics = finished.data.metrics
            rows.append(AblationRow(group_name(cfg), variant.key, cfg.train.seed, finished.info.run_id, "skipped",
                                    config_hash(cfg), metrics.get("test_f1"), metrics.get("best_dev_f1"),
                                    _duration_seconds(finished)))
            continue
        resume_id = unfinished_run_to_resume(client, experiment_id, cfg)
        log.info("%s %s seed %d -> %s", "resume" if resume_id else "train", variant.key, cfg.train.seed,
                 cfg.train.output_dir)
        result = train_and_log(cfg, resume=resume_id is not None, tags=_tags(cfg, variant, resumed=resume_id is not None))
        if not keep_checkpoints:
            shutil.rmtree(Path(cfg.train.output_dir) / "checkpoints", ignore_errors=True)
        rows.append(AblationRow(group_name(cfg), variant.key, cfg.train.seed, result.run_id,
                                "resumed" if resume_id else "trained", config_hash(cfg),
                                result.test_metrics.get("test_f1"), result.dev_metric, result.wall_seconds))
    return rows


# -- reading the grid back ------------------------------------------------------------------------------------------


@dataclass
class Stat:
    """Mean and sample standard deviation (n - 1; None for a single value) of one number over seeds."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat | None:
        values = [float(v) for v in values if v is not None]
        if not values:
            return None
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))


@dataclass
class AblationRun:
    run_id: str
    group: str
    variant: str
    seed: int
    config_hash: str
    setting_hash: str
    start_time_ms: int
    test_f1: float | None
    dev_f1: float | None  # dev micro-F1 of the epoch that was selected (best_dev_f1)
    per_type_f1: dict[str, float]
    best_epoch: int | None
    epochs_run: int
    wall_seconds: float | None  # the MLflow run's duration (end - start)
    commit: str
    dirty: bool
    resumed: bool
    identity: dict[str, str]  # the config params (without the excluded keys)
    probe: dict[str, float] = field(default_factory=dict)  # dev alignment probe: cosine_top1, context_gate, ...


@dataclass
class VariantSummary:
    group: str
    variant: str
    number: int
    label: str
    setting_hash: str
    seeds: list[int]
    run_ids: list[str]
    test_f1: Stat | None
    dev_f1: Stat | None
    per_type_f1: dict[str, Stat]
    best_epoch: Stat | None
    epochs_run: Stat | None
    wall_seconds: Stat | None
    commits: list[str]
    dirty: bool
    resumed: bool
    identity: dict[str, str] = field(default_factory=dict)  # the shared config (seed excluded)
    probe: dict[str, Stat] = field(default_factory=dict)  # over the seeds whose runs logged the probe


def _duration_seconds(run) -> float | None:
    if run.info.end_time is None or run.info.start_time is None:
        return None
    return (run.info.end_time - run.info.start_time) / 1000.0


def _epochs_run(client, run) -> int:
    """Epochs the run trained: its history.json artifact (complete, also for a resumed run, whose MLflow metrics
    start at the resumed epoch); the steps of its dev_f1 metric where that artifact is missing."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        history = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/history.json")["history"]
        return len({h["epoch"] for h in history})
    except (MlflowException, OSError, KeyError, TypeError, ValueError):
        return len({m.step for m in client.get_metric_history(run.info.run_id, "dev_f1")})


def _per_type(metrics: dict[str, float]) -> dict[str, float]:
    """`test_<TYPE>_f1` metrics (the micro `test_f1` excluded) -> {TYPE: f1}."""
    return {k[len("test_") : -len("_f1")]: v for k, v in metrics.items()
            if k.startswith("test_") and k.endswith("_f1") and k != "test_f1"}


PROBE_PREFIX = "dev_probe_"  # the alignment probe's metrics (components/training/alignment_probe.py)


def _probe(metrics: dict[str, float]) -> dict[str, float]:
    return {k[len(PROBE_PREFIX):]: v for k, v in metrics.items() if k.startswith(PROBE_PREFIX)}


def _identity_of(params: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in sorted(params.items())
            if not identity_excluded(k) and not k.startswith("lineage.") and not _is_data_summary(k)}


def _is_data_summary(key: str) -> bool:
    # data.<split>_size and data.<split>_context_coverage: measured, not configured
    return key.startswith("data.") and (key.endswith("_size") or key.endswith("_context_coverage"))


def collect_ablation_runs(experiment: str = DEFAULT_EXPERIMENT, group: str | None = None) -> list[AblationRun]:
    """FINISHED runs tagged by the ablation; of several runs with one config hash, the newest."""
    client, experiment_id = _experiment_id(experiment)
    query = "attributes.status = 'FINISHED'"
    if group is not None:
        query += f" and tags.`{TAG_PREFIX}group` = {_quote(group)}"
    newest: dict[tuple[str, str, str], AblationRun] = {}
    for run in _search(client, experiment_id, query):
        tags = run.data.tags
        if f"{TAG_PREFIX}variant" not in tags:
            continue  # not an ablation run (or finished but not yet tagged: `run_ablation` tags it when rerun)
        identity = _identity_of(run.data.params)
        epochs_run = _epochs_run(client, run)
        best_epoch = run.data.metrics.get("best_epoch")
        item = AblationRun(
            run_id=run.info.run_id,
            group=tags[f"{TAG_PREFIX}group"],
            variant=tags[f"{TAG_PREFIX}variant"],
            seed=int(tags.get(f"{TAG_PREFIX}seed", run.data.params.get(SEED_KEY, "-1"))),
            # The tags are hashed from the config itself; recomputing from params is the fallback for older runs.
            config_hash=tags.get(f"{TAG_PREFIX}config_hash") or identity_hash(identity),
            setting_hash=tags.get(f"{TAG_PREFIX}setting_hash") or identity_hash(identity, include_seed=False),
            start_time_ms=run.info.start_time or 0,
            test_f1=run.data.metrics.get("test_f1"),
            dev_f1=run.data.metrics.get("best_dev_f1"),
            per_type_f1=_per_type(run.data.metrics),
            best_epoch=int(best_epoch) if best_epoch is not None else None,
            epochs_run=epochs_run,
            wall_seconds=_duration_seconds(run),
            commit=run.data.params.get("lineage.git_commit", tags.get("lineage.git_commit", "unknown")),
            dirty=run.data.params.get("lineage.git_dirty") == "True",
            resumed=tags.get(f"{TAG_PREFIX}resumed") == "true",
            identity=identity,
            probe=_probe(run.data.metrics),
        )
        key = (item.group, item.variant, item.config_hash)
        if key not in newest or item.start_time_ms > newest[key].start_time_ms:
            newest[key] = item
    return sorted(newest.values(), key=lambda r: (r.group, VARIANTS[r.variant].number if r.variant in VARIANTS else 99,
                                                   r.setting_hash, r.seed))


def summarize_runs(runs: Sequence[AblationRun], latest_setting_only: bool = True) -> list[VariantSummary]:
    """Aggregate over seeds per (group, variant, setting). With `latest_setting_only`, of several settings of one
    (group, variant) (say a quick 1-epoch grid and the real one) only the one with the newest run is kept."""
    by_setting: dict[tuple[str, str, str], list[AblationRun]] = defaultdict(list)
    for run in runs:
        by_setting[(run.group, run.variant, run.setting_hash)].append(run)
    if latest_setting_only:
        newest: dict[tuple[str, str], tuple[str, str, str]] = {}
        for key, members in by_setting.items():
            slot = key[:2]
            latest = max(r.start_time_ms for r in members)
            if slot not in newest or latest > max(r.start_time_ms for r in by_setting[newest[slot]]):
                newest[slot] = key
        by_setting = {key: by_setting[key] for key in newest.values()}
    summaries = []
    for (group, variant_key, setting), members in by_setting.items():
        members = sorted(members, key=lambda r: r.seed)
        variant = VARIANTS.get(variant_key)
        types = sorted({t for r in members for t in r.per_type_f1})
        summaries.append(VariantSummary(
            group=group,
            variant=variant_key,
            number=variant.number if variant else 0,
            label=variant.label if variant else variant_key,
            setting_hash=setting,
            seeds=[r.seed for r in members],
            run_ids=[r.run_id for r in members],
            test_f1=Stat.of([r.test_f1 for r in members]),
            dev_f1=Stat.of([r.dev_f1 for r in members]),
            per_type_f1={t: s for t in types if (s := Stat.of([r.per_type_f1.get(t) for r in members]))},
            best_epoch=Stat.of([r.best_epoch for r in members]),
            epochs_run=Stat.of([r.epochs_run for r in members]),
            wall_seconds=Stat.of([r.wall_seconds for r in members]),
            commits=sorted({r.commit for r in members}),
            dirty=any(r.dirty for r in members),
            resumed=any(r.resumed for r in members),
            identity={k: v for k, v in members[0].identity.items() if k != SEED_KEY},
            probe={k: s for k in sorted({k for r in members for k in r.probe})
                   if (s := Stat.of([r.probe.get(k) for r in members]))},
        ))
    return sorted(summaries, key=lambda s: (s.group, s.number, s.setting_hash))


def summarize_ablation(experiment: str = DEFAULT_EXPERIMENT, group: str | None = None,
                       latest_setting_only: bool = True) -> list[VariantSummary]:
    """Mean ± std over seeds of every ablation setting in the experiment, read back from MLflow."""
    return summarize_runs(collect_ablation_runs(experiment, group), latest_setting_only)
