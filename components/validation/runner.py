"""Validate a dataset with Great Expectations 1.x: read every split leniently, flatten it into frames, run each
frame's suite through a GX Checkpoint, and collect the results into a ``ValidationReport``, one JSON file and Data Docs.

The GX project is the file data context in ``gx/`` at the project root (``great_expectations.yml``, committed):

- a pandas datasource ``shapca`` with one dataframe asset per frame kind (sentences, tokens, mentions, ...);
- one expectation suite per (dataset, split, frame), in ``gx/expectations/`` (built from
  components/validation/suites.py and the task's checks, components/tasks/<task>/checks.py, rewritten only when the
  code's suite differs from the stored one, so the committed files stay put);
- one validation definition (suite + frame asset) and one Checkpoint per suite, in ``gx/validation_definitions/``
  and ``gx/checkpoints/``. A checkpoint runs its validation on the frame passed as ``batch_parameters`` and its
  ``UpdateDataDocsAction`` adds the result to the Data Docs site ``gx/uncommitted/data_docs/local_site/``.

Everything under ``gx/uncommitted/`` (validation results, Data Docs) is generated and git-ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.data.context_files import ContextReadResult
from components.data.records import ReadResult, example_key, sentence_key
from components.datasets import SPLITS, DatasetSpec, get_spec, read_contexts, read_split
from components.tasks import TASKS, get_task
from components.tasks.checks import Policy
from components.validation import frames, suites
from components.validation.report import ValidationReport, ValidationRow

DEFAULT_MAX_BIO_ERROR_RATE = 0.05  # twitter2015's originals: 2.6-3.3% of mentions start with I-
DEFAULT_MAX_EMPTY_CONTEXT_RATE = 0.01  # BLIP-2 left 2 of twitter2015's 8288 captions empty
# The GX data assets: the frames every task has, then each task's own.
FRAME_KINDS = ("problems", "sentences", *(kind for task in TASKS.values() for kind in task.checks.frame_kinds))
DATASOURCE = "shapca"
DATA_DOCS_SITE = "local_site"


GX_DIR_ENV = "SHAPCA_GX_DIR"  # another GX project directory (tests point it at a copy of gx/)


def default_gx_dir() -> Path:
    """``SHAPCA_GX_DIR`` when set, else ``<project root>/gx``."""
    from components.common.project_root import find_project_root

    return Path(os.environ.get(GX_DIR_ENV) or find_project_root() / "gx")


@dataclass
class GxWorkspace:
    """The GX objects one command reuses: the file data context and a whole-dataframe batch definition per frame."""

    data_context: Any  # GX's own name for its project object
    batch_definitions: dict[str, Any]
    root: Path  # the gx/ directory
    run_name: str = "shapca-validate"  # set per dataset by validate_examples: "<dataset>-<context generator>"
    # Data Docs pages of the validation results of this command, by suite name (file:// URLs).
    result_pages: dict[str, str] = field(default_factory=dict)

    def data_docs_index(self) -> Path:
        return self.root / "uncommitted" / "data_docs" / DATA_DOCS_SITE / "index.html"


def open_gx_workspace(gx_dir: str | Path | None = None) -> GxWorkspace:
    """The file data context in ``gx_dir`` (default ``<project root>/gx``), with its datasource and frame assets
    (created on first use, reused after)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # nothing leaves this machine
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    root = Path(gx_dir) if gx_dir is not None else default_gx_dir()
    if not (root / "great_expectations.yml").is_file():
        raise FileNotFoundError(f"{root}/great_expectations.yml: no GX project there (the repository's gx/ holds it)")
    data_context = gx.get_context(mode="file", context_root_dir=str(root))
    data_context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    datasource: Any  # GX's pandas datasource (its generic type does not name add_dataframe_asset)
    try:
        datasource = data_context.data_sources.get(DATASOURCE)
    except (KeyError, ValueError):
        datasource = data_context.data_sources.add_pandas(DATASOURCE)
    batch_definitions = {}
    for kind in FRAME_KINDS:
        try:
            asset = datasource.get_asset(kind)
        except LookupError:
            asset = datasource.add_dataframe_asset(kind)
        try:
            batch_definitions[kind] = asset.get_batch_definition(f"{kind}-whole")
        except KeyError:
            batch_definitions[kind] = asset.add_batch_definition_whole_dataframe(f"{kind}-whole")
    return GxWorkspace(data_context, batch_definitions, root)


def _same_expectations(stored, expectations: list) -> bool:
    def key(e) -> str:
        config = e.configuration.to_json_dict()
        config.pop("id", None)
        return json.dumps(config, sort_keys=True, default=str)

    return sorted(key(e) for e in stored.expectations) == sorted(key(e) for e in expectations)


def _suite(gx_workspace: GxWorkspace, name: str, expectations: list):
    """The stored suite ``name``; rewritten when its expectations differ from the code's (a changed threshold)."""
    import great_expectations as gx
    from great_expectations.exceptions import DataContextError

    stored_suites = gx_workspace.data_context.suites
    try:
        stored = stored_suites.get(name)
    except DataContextError:
        stored = None
    if stored is not None and _same_expectations(stored, expectations):
        return stored
    suite = gx.ExpectationSuite(name=name, expectations=expectations)
    return stored_suites.add_or_update(suite)


def _run_identifier(run_name: str):
    from great_expectations.core.run_identifier import RunIdentifier

    return RunIdentifier(run_name=run_name)


def _checkpoint(gx_workspace: GxWorkspace, kind: str, suite, has_id: bool):
    """The validation definition (frame asset + suite) and the checkpoint that runs it and updates Data Docs."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    data_context = gx_workspace.data_context
    definition = data_context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=suite.name, data=gx_workspace.batch_definitions[kind], suite=suite)
    )
    # SUMMARY keeps the counts and the first 20 offending values; indexing them by example id says where they are.
    result_format: dict[str, Any] = {"result_format": "SUMMARY"}
    if has_id:
        result_format["unexpected_index_column_names"] = ["id"]
    return data_context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=suite.name,
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="update_data_docs", site_names=[DATA_DOCS_SITE])],
            result_format=result_format,
        )
    )


def _example(entry: Any) -> str:
    """One offending row in words: its example id and the offending value (a flag's True/False says nothing)."""
    if isinstance(entry, dict):
        values = [_plain(v) for k, v in entry.items() if k != "id" and not isinstance(_plain(v), bool)]
        shown = f": {', '.join(map(repr, values))}" if values else ""
        return f"{entry.get('id', '?')}{shown}"
    return repr(_plain(entry))


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _observed(result: dict, meta: dict) -> tuple[str, int | None, int | None, Any, list[str]]:
    """(observed in words, unexpected count, element count, observed value, examples) from one GX result dict."""
    indexed = result.get("partial_unexpected_index_list") or []
    examples = [_example(e) for e in indexed] or [_example(v) for v in result.get("partial_unexpected_list") or []]
    examples = list(dict.fromkeys(examples))[:5]
    if "unexpected_count" in result:
        unexpected, elements = result.get("unexpected_count") or 0, result.get("element_count") or 0
        measured = elements - (result.get("missing_count") or 0)  # nulls (an image without context) are not measured
        share = unexpected / measured if measured else 0.0
        return f"{unexpected} of {measured} unexpected ({share:.2%})", unexpected, measured, None, examples
    value = _plain(result.get("observed_value"))
    if meta.get("format") == "share" and isinstance(value, (int, float)):
        return f"{value:.2%}", None, None, value, examples
    return str(value), None, None, value, examples


def _run(
    gx_workspace: GxWorkspace,
    kind: str,
    frame,
    suite_name: str,
    expectations: list,
    split: str,
    rows: list[ValidationRow],
    results: list[dict],
    examples_of: Callable[[], list[str]] | None = None,
) -> None:
    suite = _suite(gx_workspace, suite_name, expectations)
    checkpoint = _checkpoint(gx_workspace, kind, suite, "id" in frame.columns)
    # The run name groups a command's results in Data Docs ("twitter2017-blip2"), instead of GX's "__none__".
    outcome = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=_run_identifier(gx_workspace.run_name))
    ((result_id, validation),) = outcome.run_results.items()
    urls = gx_workspace.data_context.get_docs_sites_urls(resource_identifier=result_id, site_name=DATA_DOCS_SITE)
    if urls and urls[0].get("site_url"):
        gx_workspace.result_pages[suite_name] = urls[0]["site_url"]
    results.append({"suite": suite_name, "split": split, "frame": kind, "result": validation.to_json_dict()})
    for item in validation.results:
        config = item.expectation_config
        meta = dict(config.meta or {})
        kwargs = dict(config.kwargs or {})
        column = kwargs.get("column") or (
            f"{kwargs['column_A']}={kwargs['column_B']}" if "column_A" in kwargs else None
        )
        examples: list[str]
        if item.exception_info and item.exception_info.get("raised_exception"):
            observed, unexpected, elements, value, examples = (
                f"error: {item.exception_info.get('exception_message')}",
                None,
                None,
                None,
                [],
            )
        else:
            observed, unexpected, elements, value, examples = _observed(item.result or {}, meta)
        if examples_of is not None and not item.success:
            examples = examples_of()
        rows.append(
            ValidationRow(
                check=meta.get("check", config.type),
                expectation=config.type,
                split=split,
                frame=kind,
                column=column,
                success=bool(item.success),
                blocking=bool(meta.get("blocking", True)),
                observed=observed,
                unexpected_count=unexpected,
                element_count=elements,
                observed_value=value,
                examples=examples,
            )
        )


def _split_stats(spec: DatasetSpec, examples: list, contexts: dict[str, str] | None) -> dict[str, Any]:
    stats: dict[str, Any] = {"examples": len(examples), "tokens": sum(len(e.tokens) for e in examples)}
    stats.update(get_task(spec.task).checks.stats(examples))
    stats["images"] = len({e.image_id for e in examples})
    if contexts is not None:
        ids = [e.image_id for e in examples]
        stats["context_coverage"] = sum(i in contexts for i in ids) / len(ids) if ids else 0.0
    return stats


def validate_examples(
    spec: DatasetSpec,
    splits: dict[str, ReadResult],
    contexts: ContextReadResult | None,
    *,
    context_generator: str = "blip2",
    max_bio_error_rate: float = DEFAULT_MAX_BIO_ERROR_RATE,
    min_context_coverage: float | None = None,
    max_empty_context_rate: float = DEFAULT_MAX_EMPTY_CONTEXT_RATE,
    check_published_sizes: bool = True,
    result_path: Path | None = None,
    gx_workspace: GxWorkspace | None = None,
) -> ValidationReport:
    """Validate already-read splits (``read_split`` results) and contexts; see ``validate_dataset``."""
    has_published_set = contexts is not None and spec.publishes_contexts(context_generator)
    if contexts is None:
        coverage, coverage_blocking = None, False
    elif min_context_coverage is not None:
        coverage, coverage_blocking = min_context_coverage, True
    else:
        # BLIP-2 captioned every Twitter image: anything less is a broken pull. mPLUG-Owl described ~70-88% of them,
        # and nothing covers MNRE's images: there the coverage is information, not a gate.
        coverage, coverage_blocking = 1.0, has_published_set and context_generator == "blip2"
    policy = Policy(
        max_bio_error_rate=max_bio_error_rate,
        min_context_coverage=coverage,
        coverage_blocking=coverage_blocking,
        max_empty_context_rate=max_empty_context_rate,
        check_published_sizes=check_published_sizes,
    )
    gx_workspace = gx_workspace or open_gx_workspace()
    gx_workspace.run_name = f"{spec.name}-{context_generator}"
    gx_workspace.result_pages = {}
    context_texts = contexts.context_set.contexts if contexts is not None else None
    rows: list[ValidationRow] = []
    results: list[dict] = []
    stats: dict[str, Any] = {"splits": {}}

    train = splits["train"].examples
    train_sentences = {sentence_key(e.tokens) for e in train}
    train_examples = {example_key(e.tokens, e.image_id) for e in train}

    def problem_examples(problems):
        return lambda: [str(p) for p in problems[:5]]

    for split in SPLITS:
        read = splits[split]
        prefix = f"{spec.name}.{split}"
        _run(
            gx_workspace,
            "problems",
            frames.problems_frame(read.problems),
            f"{prefix}.problems",
            suites.problem_expectations(),
            split,
            rows,
            results,
            problem_examples(read.problems),
        )
        is_train = split == "train"
        checks = get_task(spec.task).checks
        sentences = frames.sentences_frame(
            checks.sentence_columns,
            checks.sentence_row,
            read.examples,
            context_texts,
            None if is_train else train_sentences,
            None if is_train else train_examples,
        )
        # The sentence suite depends on the contexts (coverage checks): one per generator.
        _run(
            gx_workspace,
            "sentences",
            sentences,
            f"{prefix}.sentences-{context_generator}",
            suites.sentence_expectations(spec, split, policy),
            split,
            rows,
            results,
        )
        for kind, frame, expectations in checks.record_frames(spec.labels, read.examples, policy):
            _run(gx_workspace, kind, frame, f"{prefix}.{kind}", expectations, split, rows, results)
        split_stats = _split_stats(spec, read.examples, context_texts)
        split_stats["reader_problems"] = len(read.problems)
        if not is_train:
            split_stats["text_shared_with_train"] = int(sentences["text_in_train"].sum()) if len(sentences) else 0
        stats["splits"][split] = split_stats
    if contexts is not None:
        _run(
            gx_workspace,
            "problems",
            frames.problems_frame(contexts.problems),
            f"{spec.name}.contexts.problems",
            suites.problem_expectations(),
            "contexts",
            rows,
            results,
            problem_examples(contexts.problems),
        )
        stats["contexts"] = {
            "generator": context_generator,
            "images": len(contexts.context_set.contexts),
            "published_set": has_published_set,
        }

    report = ValidationReport(
        dataset=spec.name,
        context_generator=context_generator,
        rows=rows,
        stats=stats,
        data_docs=gx_workspace.data_docs_index(),
        data_docs_pages={r["suite"]: gx_workspace.result_pages.get(r["suite"], "") for r in results},
    )
    if result_path is not None:
        result_path = Path(result_path)
        result_path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "dataset": spec.name,
            "context_generator": context_generator,
            "success": report.success,
            "statistics": stats,
            "validations": results,
        }
        result_path.write_text(json.dumps(payload, indent=1, default=_json_default), encoding="utf-8")
        report.result_path = result_path
    return report


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def validate_dataset(
    name: str,
    data_dir: Path = Path("data"),
    context_generator: str = "blip2",
    max_bio_error_rate: float = DEFAULT_MAX_BIO_ERROR_RATE,
    result_path: Path | None = None,
    *,
    min_context_coverage: float | None = None,
    max_empty_context_rate: float = DEFAULT_MAX_EMPTY_CONTEXT_RATE,
    check_published_sizes: bool = True,
    gx_workspace: GxWorkspace | None = None,
) -> ValidationReport:
    """Read ``name``'s three splits (leniently: reader problems become a failed blocking expectation) and the
    contexts of ``context_generator`` ("none" for no contexts), validate them with GX and, when ``result_path`` is
    given, write the full GX results there as JSON.

    Blocking: reader problems, split sizes (the published ones unless ``check_published_sizes=False``), tag /
    relation label sets, BIO error rate above ``max_bio_error_rate``, token/tag counts, span bounds, empty sentences
    or tokens, a (text, image) example of dev/test that is also in train, and, for blip2 on the Twitter sets, context
    coverage below 100% or empty contexts above ``max_empty_context_rate``. The same text under another image is
    reported, not blocking (the originals hold retweets of one text with different images).
    """
    spec = get_spec(name)
    splits = {split: read_split(name, split, Path(data_dir)) for split in SPLITS}
    contexts = None if context_generator == "none" else read_contexts(context_generator, name, Path(data_dir))
    return validate_examples(
        spec,
        splits,
        contexts,
        context_generator=context_generator,
        max_bio_error_rate=max_bio_error_rate,
        min_context_coverage=min_context_coverage,
        max_empty_context_rate=max_empty_context_rate,
        check_published_sizes=check_published_sizes,
        result_path=result_path,
        gx_workspace=gx_workspace,
    )
