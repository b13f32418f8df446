"""docs/RESULTS.md from the ablation runs in MLflow: one table per (dataset, contexts) group with mean ± std over
seeds, per-type F1, the runs behind every number and the config of every setting.

F1 values are printed as percentages (micro-F1 x 100) with two decimals, as the Shap-CA paper and its peers do.
Reference points printed beside ours come from published training logs or papers, not from this project
(`REFERENCES`). Written over a document that has `GENERATED_MARKER`, the report keeps everything above the marker (the
summary a person writes from the tables) and replaces everything below it (`keep_hand_written_summary`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

from components.experiments.ablation.collect import AblationRun
from components.experiments.ablation.summary import Stat, VariantSummary
from components.experiments.ablation.variants import VARIANTS


@dataclass(frozen=True)
class Reference:
    dataset: str
    name: str
    test_f1: float  # percent
    source: str


_UMT = "UMT peer (BERT-base + ResNet-152 on the real images)"
REFERENCES = (
    Reference("twitter2015", _UMT, 73.20, "its published training logs"),
    Reference("twitter2017", _UMT, 85.09, "its published training logs"),
    Reference("mnre", "MEGA peer (BERT-base + the real images)", 66.41, "the MNRE paper (Zheng et al. 2021)"),
)
# Everything below this line in docs/RESULTS.md is the report's; everything above it is written by hand.
GENERATED_MARKER = "<!-- Everything below this line is written by `shapca experiment report`: edit above it. -->"
GROUP_ORDER = (
    "twitter2017/blip2",
    "twitter2017/mplug-owl",
    "twitter2015/blip2",
    "twitter2015/mplug-owl",
    "mnre/none",
    "mnre-joint/none",
)
MAX_TYPE_COLUMNS = 6  # more types than this (MNRE's relations): the per-type table lists types as rows


def _pct(stat: Stat | None) -> str:
    if stat is None:
        return "–"
    return f"{100 * stat.mean:.2f}" if stat.std is None else f"{100 * stat.mean:.2f} ± {100 * stat.std:.2f}"


def _num(stat: Stat | None, scale: float = 1.0, digits: int = 1) -> str:
    if stat is None:
        return "–"
    if stat.std is None:
        return f"{stat.mean * scale:.{digits}f}"
    return f"{stat.mean * scale:.{digits}f} ± {stat.std * scale:.{digits}f}"


def _commits(commits: Sequence[str], dirty: bool) -> str:
    text = ", ".join(f"`{c[:8]}`" for c in commits) or "–"
    return text + (" (dirty)" if dirty else "")


def redact_uri(uri: str) -> str:
    """A tracking URI without user:password (a server URI may carry them)."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _group_sort_key(group: str) -> tuple[int, str]:
    return (GROUP_ORDER.index(group) if group in GROUP_ORDER else len(GROUP_ORDER), group)


def _run_order(run: AblationRun) -> tuple:
    return _group_sort_key(run.group), VARIANTS[run.variant].number if run.variant in VARIANTS else 99, run.seed


def _config_diff(identity: dict[str, str], baseline: dict[str, str] | None) -> str:
    items: Iterable[tuple[str, str]]
    if baseline is None:
        items = identity.items()
    else:
        items = [(k, v) for k, v in identity.items() if baseline.get(k) != v]
    return ", ".join(f"`{k}={v}`" for k, v in sorted(items)) or "(same as the baseline)"


# What the group (dataset/contexts) and the variant already say; the rest of a setting's difference is its own.
_GROUP_AND_VARIANT_KEYS = {"data.dataset", "data.context_generator", "model.context_mode", "model.alignment"}


def _setting_cell(s: VariantSummary, baseline: dict[str, str] | None) -> str:
    """The setting's anchor plus what it changes beyond its group and variant, e.g. `train.epochs=6`."""
    link = f"[`{s.setting_hash[:8]}`](#setting-{s.setting_hash[:8]})"
    if baseline is None:
        return link
    own = {k: v for k, v in s.identity.items() if k not in _GROUP_AND_VARIANT_KEYS}
    changed = [f"`{k}={v}`" for k, v in sorted(own.items()) if baseline.get(k) != v]
    return link + (" " + ", ".join(changed) if changed else "")


def _per_type_table(summaries: list[VariantSummary], baseline: dict[str, str] | None) -> list[str]:
    types = sorted({t for s in summaries for t in s.per_type_f1})
    if not types:
        return []
    lines = ["", "Per-type test F1:", ""]
    if len(types) <= MAX_TYPE_COLUMNS:
        lines += ["| # | variant | setting | " + " | ".join(types) + " |", "|---|---|---|" + "---|" * len(types)]
        for s in summaries:
            cells = " | ".join(_pct(s.per_type_f1.get(t)) for t in types)
            lines.append(f"| {s.number} | {s.variant} | {_setting_cell(s, baseline)} | {cells} |")
    else:
        lines += [
            "| type | " + " | ".join(f"{s.number} {s.variant} `{s.setting_hash[:8]}`" for s in summaries) + " |",
            "|---|" + "---|" * len(summaries),
        ]
        for t in types:
            lines.append(f"| {t} | " + " | ".join(_pct(s.per_type_f1.get(t)) for s in summaries) + " |")
    return lines


def _probe_table(summaries: list[VariantSummary], baseline: dict[str, str] | None) -> list[str]:
    """Settings whose runs logged the dev alignment probe: own-context top-1, logit margins, fusion gate."""
    probed = [s for s in summaries if s.probe]
    if not probed:
        return []
    lines = [
        "",
        "Alignment probe on dev (`components/training/alignment_probe.py`; own-context top-1 among the "
        "contexts of a batch, 32 by default, so chance is 3.1%; margin = (own − other score) / tau; r and "
        "scale: how far the Shapley scores of a target are a rescaled cosine, and by what factor):",
        "",
        "| # | variant | setting | runs probed | top-1 cosine (%) | top-1 Shapley (%) | margin cosine | "
        "margin Shapley | r(Shapley, cosine) | scale | context gate |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in probed:
        count = max((stat.n for stat in s.probe.values()), default=0)
        lines.append(
            f"| {s.number} | {s.variant} | {_setting_cell(s, baseline)} | {count} | "
            f"{_num(s.probe.get('cosine_top1'), 100)} | {_num(s.probe.get('shapley_top1'), 100)} | "
            f"{_num(s.probe.get('cosine_margin'), digits=2)} | {_num(s.probe.get('shapley_margin'), digits=2)} | "
            f"{_num(s.probe.get('shapley_cosine_correlation'), digits=3)} | "
            f"{_num(s.probe.get('shapley_cosine_scale'), digits=2)} | "
            f"{_num(s.probe.get('context_gate'), digits=3)} |"
        )
    return lines


def render_results_markdown(
    summaries: Sequence[VariantSummary],
    runs: Sequence[AblationRun],
    *,
    experiment: str,
    tracking_uri: str,
    command: str,
    baseline: dict[str, str] | None = None,
    baseline_name: str = "configs/default.yaml",
    generated_at: datetime | None = None,
) -> str:
    """The whole document. `runs` are listed under "Runs" (only those behind a summary); `baseline` is the identity
    of the config each setting is compared with under "Configs"."""
    generated_at = generated_at or datetime.now(UTC)
    shown_ids = {rid for s in summaries for rid in s.run_ids}
    lines = [
        "# Results",
        "",
        f"Generated {generated_at:%Y-%m-%d %H:%M} UTC by `{command}` from MLflow experiment `{experiment}` "
        f"(tracking store `{redact_uri(tracking_uri)}`).",
        "",
        "Every number is the mean ± sample standard deviation (n - 1) over seeds of FINISHED MLflow runs tagged by "
        "`shapca experiment ablation`; F1 is micro-F1 × 100 on the test split, scored once with the model of the dev "
        'epoch with the best micro-F1 (the "dev F1" column). Wall time is the MLflow run\'s duration (data loading, '
        "training, scoring, logging). The runs behind each row, their commits and the config of each setting are "
        "listed under [Runs](#runs) and [Configs](#configs). A commit marked *dirty* ran with tracked files changed "
        "from that commit; a row marked † contains a run resumed from a checkpoint, whose wall time includes the "
        "interruption.",
    ]
    if not summaries:
        lines += ["", "_No finished ablation runs in this experiment yet._"]
    groups = sorted({s.group for s in summaries}, key=_group_sort_key)
    for group in groups:
        members = sorted((s for s in summaries if s.group == group), key=lambda s: (s.number, s.setting_hash))
        dataset, _, contexts = group.partition("/")
        lines += [
            "",
            f"## {dataset} · contexts: {contexts}",
            "",
            "| # | variant | seeds | test micro-F1 | dev F1 (selected epoch) | best epoch | epochs run | "
            "wall time (min) | commit | setting |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for s in members:
            mark = " †" if s.resumed else ""
            lines.append(
                f"| {s.number} | {s.label}{mark} | {len(s.seeds)} | {_pct(s.test_f1)} | {_pct(s.dev_f1)} | "
                f"{_num(s.best_epoch)} | {_num(s.epochs_run)} | {_num(s.wall_seconds, 1 / 60)} | "
                f"{_commits(s.commits, s.dirty)} | {_setting_cell(s, baseline)} |"
            )
        for ref in REFERENCES:
            if ref.dataset == dataset:
                lines.append(f"| ref | {ref.name}, from {ref.source} | – | {ref.test_f1:.2f} | – | – | – | – | – | – |")
        lines += _per_type_table(members, baseline)
        lines += _probe_table(members, baseline)

    lines += [
        "",
        "## Runs",
        "",
        "| run id | group | variant | seed | test F1 | dev F1 | best epoch | epochs run | wall (s) | commit | "
        "config hash |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    listed = sorted((r for r in runs if r.run_id in shown_ids), key=_run_order)
    for r in listed:
        f1 = "–" if r.test_f1 is None else f"{100 * r.test_f1:.2f}"
        dev = "–" if r.dev_f1 is None else f"{100 * r.dev_f1:.2f}"
        wall = "–" if r.wall_seconds is None else f"{r.wall_seconds:.0f}"
        lines.append(
            f"| `{r.run_id}` | {r.group} | {r.variant}{' †' if r.resumed else ''} | {r.seed} | {f1} | {dev} | "
            f"{r.best_epoch if r.best_epoch is not None else '–'} | {r.epochs_run} | {wall} | "
            f"{_commits([r.commit], r.dirty)} | `{r.config_hash}` |"
        )

    lines += [
        "",
        "## Configs",
        "",
        f"Each setting (the config hash without the seed) with the params in which it differs from "
        f"`{baseline_name}`; the full config is in the params of each of its runs.",
        "",
    ]
    for s in sorted(summaries, key=lambda s: (_group_sort_key(s.group), s.number)):
        lines.append(
            f'- <a id="setting-{s.setting_hash[:8]}"></a>`{s.setting_hash[:8]}` ({s.group}, {s.variant}, '
            f"seeds {', '.join(map(str, s.seeds))}): {_config_diff(s.identity, baseline)}"
        )
    return "\n".join(lines) + "\n"


def keep_hand_written_summary(previous: str | None, generated: str) -> str:
    """`generated` below the hand-written part of `previous` (everything up to and including `GENERATED_MARKER`), so
    that regenerating the tables keeps the summary written from them; without the marker, `generated` alone."""
    if previous is None or GENERATED_MARKER not in previous:
        return generated
    head = previous[: previous.index(GENERATED_MARKER) + len(GENERATED_MARKER)]
    return head + "\n" + generated.removeprefix("# Results\n")  # the hand-written part has the title
