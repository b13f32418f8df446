"""Mean ± sample std over seeds of every ablation setting: one `VariantSummary` per (group, variant, setting)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from components.config import SEED_KEY
from components.experiments.ablation.collect import AblationRun
from components.experiments.ablation.variants import VARIANTS


@dataclass
class Stat:
    """Mean and sample standard deviation (n - 1; None for a single value) of one number over seeds."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Stat | None:
        """Mean, sample std and count of the values that are there (None: a run that did not record it)."""
        present = [float(v) for v in values if v is not None]
        if not present:
            return None
        return cls(statistics.fmean(present), statistics.stdev(present) if len(present) > 1 else None, len(present))


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
        summaries.append(
            VariantSummary(
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
                probe={
                    k: s
                    for k in sorted({k for r in members for k in r.probe})
                    if (s := Stat.of([r.probe.get(k) for r in members]))
                },
            )
        )
    return sorted(summaries, key=lambda s: (s.group, s.number, s.setting_hash))
