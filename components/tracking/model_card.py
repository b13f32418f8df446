"""Model cards: the registered model's description and each version's description, written from the training run.

    write_model_card(client, "shapca-twitter2017", "3", decision)   # after register_version + promote

The version card says what this version is, from its own run only: task and labels, the data version and the digests
of the datasets it was trained and scored on (the run's MLflow inputs), the context generator, the encoders, the
LoggedModel's dev and test metrics next to the champion's it was compared with, the training budget, the limits that
follow from its config, and where the study of its dataset is (a link: study findings are not this run's facts). The
registered-model card says what the model family is for, how to call it, the same limits, and which version is
champion now. Both are markdown (the MLflow UI renders them) and are regenerated on every registration, so they follow
the champion alias.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from components.datasets import get_spec
from components.tasks import get_task

MAX_DESCRIPTION = 5000  # MLflow's registry keeps at most 5000 characters of a description
HEADLINE = ("f1", "precision", "recall")


# The study of the recipe's variants over seeds (docs/RESULTS.md), by the dataset it measured: its section, which a
# card of that dataset links to. A card states its own run's facts; the study's are read there, never pasted.
STUDY = "docs/RESULTS.md"
STUDY_SECTIONS = {
    "twitter2017": "twitter2017 · contexts: blip2",
    "twitter2015": "twitter2015 · contexts: blip2",
    "mnre": "mnre · contexts: none",
    "mnre-joint": "mnre-joint · contexts: none",
}


@dataclass
class CardFacts:
    """Everything a card states, read from the registry, the run and its LoggedModel."""

    model_name: str
    version: str
    run_id: str
    model_id: str | None
    params: dict[str, str]
    model_metrics: dict[str, float]  # the LoggedModel's metrics (dev_*, test_*)
    run_metrics: dict[str, float]  # the run's (latest) metrics: best_epoch, train_seconds, ...
    datasets: list[dict[str, Any]]  # {"name", "digest", "context", "source_type", "source"} per run input
    alias: str | None = None
    reason: str | None = None
    champion: str | None = None  # the champion the decision compared against
    champion_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def dataset(self) -> str:
        return self.params.get("data.dataset", self.model_name.removeprefix("shapca-"))


def logged_model_id(model_version) -> str | None:
    """The LoggedModel behind a registry version: ``mv.model_id``, or (the sqlite registry does not keep that field)
    the id in its source ``models:/m-<id>``; None for a version registered from an artifact URI."""
    source = re.fullmatch(r"models:/(m-[0-9a-f]+)", model_version.source or "")
    return getattr(model_version, "model_id", None) or (source.group(1) if source else None)


def _model_metrics(client, model_id: str | None) -> dict[str, float]:
    if not model_id:
        return {}
    latest: dict[str, Any] = {}
    for metric in client.get_logged_model(model_id).metrics or []:
        if metric.key not in latest or metric.timestamp >= latest[metric.key].timestamp:
            latest[metric.key] = metric
    return {k: float(m.value) for k, m in latest.items()}


def gather_facts(client, model_name: str, version: str, decision=None) -> CardFacts:
    """Read the card's facts: the version, its run (params, inputs) and its LoggedModel (metrics); with
    ``decision`` (a PromotionDecision) also the champion it was compared with and that champion's metrics."""
    mv = client.get_model_version(model_name, str(version))
    run = client.get_run(mv.run_id)
    datasets = []
    for item in run.inputs.dataset_inputs if run.inputs else []:
        tags = {t.key: t.value for t in item.tags}
        datasets.append(
            {
                "name": item.dataset.name,
                "digest": item.dataset.digest,
                "context": tags.get("mlflow.data.context", ""),
                "source_type": item.dataset.source_type,
                "source": item.dataset.source,
            }
        )
    model_id = logged_model_id(mv)
    facts = CardFacts(
        model_name,
        str(version),
        mv.run_id,
        model_id,
        dict(run.data.params),
        _model_metrics(client, model_id),
        dict(run.data.metrics),
        datasets,
    )
    if decision is not None:
        facts.alias, facts.reason = decision.alias, decision.reason
        facts.champion = decision.previous_champion if decision.previous_champion != str(version) else None
        if facts.champion:
            champion = client.get_model_version(model_name, facts.champion)
            facts.champion_metrics = _model_metrics(client, logged_model_id(champion))
    return facts


def _source_text(dataset: dict[str, Any]) -> str:
    try:
        source = json.loads(dataset["source"])
    except (TypeError, ValueError):
        return str(dataset["source"])
    if dataset["source_type"] == "dvc":
        return f"DVC data md5 `{source.get('md5')}`: {', '.join(source.get('paths', []))}"
    return str(source.get("uri", source))


def _int(value: float | None) -> str:
    return "?" if value is None else str(round(value))


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _metrics_table(facts: CardFacts) -> list[str]:
    champion = f"champion v{facts.champion}" if facts.champion else None
    header = "| metric | this version |" + (f" {champion} |" if champion else "")
    lines = [header, "|---|---|" + ("---|" if champion else "")]
    for split in ("dev", "test"):
        for name in HEADLINE:
            key = f"{split}_{name}"
            if key not in facts.model_metrics and key not in facts.champion_metrics:
                continue
            row = f"| {key} | {_fmt(facts.model_metrics.get(key))} |"
            if champion:
                row += f" {_fmt(facts.champion_metrics.get(key))} |"
            lines.append(row)
    return lines


def _limits(facts: CardFacts) -> list[str]:
    """What the run's own config and data imply, and where its dataset's study is."""
    params = facts.params
    images = params.get("model.image_encoder", "None")
    out = []
    if images in ("None", ""):
        out.append(
            "No images: the model reads the text and an LMM's description of the image (context), never the "
            "image itself; set `model.image_encoder` and `data.image_dir` to train with images."
        )
    else:
        out.append(f"Images through `{images}`; an example whose image is missing or unreadable is scored without it.")
    if params.get("data.context_generator") == "none" or params.get("model.context_mode") == "none":
        published = get_spec(facts.dataset).publishes_contexts()
        why = "" if published else " (none are published for this dataset's images)"
        out.append(f"Text only: no contexts were used{why}.")
    out.append(
        "Trained and scored on English tweets / news captions of 2016-2017 (the benchmark's domain); other "
        "domains are untested."
    )
    section = STUDY_SECTIONS.get(facts.dataset)
    if section:
        commit = params.get("lineage.git_commit", "")[:12]
        at = f" at git `{commit}`" if commit else ""
        out.append(f'How this recipe\'s variants compare over seeds on this dataset: {STUDY}, section "{section}"{at}.')
    return [f"- {line}" for line in out]


def version_card(facts: CardFacts) -> str:
    """The version's description (markdown)."""
    p = facts.params
    spec = get_spec(facts.dataset)
    size = ", ".join(f"{s} {p.get(f'data.{s}_size', '?')}" for s in ("train", "dev", "test"))
    lines = [
        f"## {facts.model_name} v{facts.version}",
        "",
        f"**Task**: {get_task(spec.task).description} on {spec.description or facts.dataset}.  ",
        f"**Labels**: {', '.join(spec.labels)}.  ",
        f"**Model**: text encoder `{p.get('model.text_encoder', '?')}`, contexts `{p.get('model.context_mode', '?')}`, "
        f"alignment `{p.get('model.alignment', '?')}`"
        + (f" (game `{p.get('model.shapley_game', '?')}`)" if p.get("model.alignment") == "shapley" else "")
        + f", image encoder `{p.get('model.image_encoder', 'None')}`, "
        f"word features `{p.get('model.word_features', 'none')}`.  ",
        f"**Context generator**: `{p.get('data.context_generator', '?')}`.  ",
        f"**Run**: `{facts.run_id}` (git `{p.get('lineage.git_commit', '?')[:12]}`"
        + (", dirty tree" if p.get("lineage.git_dirty") == "True" else "")
        + f"), LoggedModel `{facts.model_id}`.",
        "",
        "### Data",
        f"Examples: {size}.",
        "",
        "| dataset | role | digest | source |",
        "|---|---|---|---|",
        *(f"| {d['name']} | {d['context']} | `{d['digest']}` | {_source_text(d)} |" for d in facts.datasets),
        "",
        "### Metrics (from the LoggedModel; dev = best epoch, test scored once with it)",
        *_metrics_table(facts),
    ]
    if facts.alias:
        lines += ["", f"**Decision**: {facts.alias}: {facts.reason}"]
    lines += [
        "",
        "### Training budget",
        f"{p.get('train.epochs', '?')} epochs (best: {_int(facts.run_metrics.get('best_epoch'))}), "
        f"{_int(facts.run_metrics.get('train_seconds'))} s of training, batch {p.get('train.batch_size', '?')}, "
        f"lr encoder {p.get('train.lr_encoder', '?')} / head {p.get('train.lr_head', '?')}, "
        f"device {p.get('train.device', '?')}, seed {p.get('train.seed', '?')}.",
        "",
        "### Known limits",
        *_limits(facts),
    ]
    return _cap("\n".join(lines))


def registered_model_card(facts: CardFacts, champion: str | None) -> str:
    """The registered model's description (markdown): what it is for, how to call it, its limits, the champion."""
    spec = get_spec(facts.dataset)
    task = get_task(spec.task)
    lines = [
        f"## {facts.model_name}",
        "",
        f"Shap-CA (Shapley value-based contrastive alignment) for {task.description} on "
        f"{spec.description or facts.dataset}. Labels: {', '.join(spec.labels)}.",
        "",
        "**Intended use**: research baseline and pipeline demonstration on the benchmark's domain; compare versions "
        "by their LoggedModel dev metrics (the `champion` alias is the best on dev F1).",
        "",
        '**Call it**: `mlflow.pyfunc.load_model("models:/' + facts.model_name + '@champion").predict(df)`, with '
        "columns `text`, optional `context` (an image description) and `image`"
        + (", and " + "/".join(f"`{name}`" for name in task.serving_spans) + " spans" if task.serving_spans else "")
        + "; every row gets an `error` field.",
        "",
        f"**Champion**: v{champion}." if champion else "**Champion**: none yet.",
        f"Latest version: v{facts.version} ({facts.alias or 'registered'}), "
        f"dev F1 {_fmt(facts.model_metrics.get('dev_f1'))}, test F1 {_fmt(facts.model_metrics.get('test_f1'))}.",
        "",
        "### Known limits",
        *_limits(facts),
    ]
    return _cap("\n".join(lines))


def _cap(text: str) -> str:
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 2] + " …"


def write_model_card(client, model_name: str, version: str, decision=None) -> CardFacts:
    """Write both cards (the version's and the registered model's description); returns the facts they state."""
    facts = gather_facts(client, model_name, version, decision)
    client.update_model_version(model_name, str(version), description=version_card(facts))
    champion = client.get_registered_model(model_name).aliases.get("champion")
    client.update_registered_model(model_name, description=registered_model_card(facts, champion and str(champion)))
    return facts
