"""Validate a dataset with Great Expectations 1.x: read every split leniently, flatten it into frames, run each
frame's suite as a GX batch, and collect the results into a ``ValidationReport`` and one JSON file.

One ephemeral GX context serves a whole command (``make_gx_context``); its pandas datasource has one asset per frame
kind, and every (split, frame) is a batch of it validated against its suite with ``batch.validate(suite)``.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.data.context_files import ContextReadResult
from components.data.datasets import SPLITS, DatasetSpec, get_spec, read_contexts, read_split
from components.data.records import NO_RELATION, ReadResult
from components.validation import frames as F
from components.validation import suites as S
from components.validation.report import ValidationReport, ValidationRow

DEFAULT_MAX_BIO_ERROR_RATE = 0.05  # twitter2015's originals: 2.6-3.3% of mentions start with I-
DEFAULT_MAX_EMPTY_CONTEXT_RATE = 0.01  # BLIP-2 left 2 of twitter2015's 8288 captions empty
FRAME_KINDS = ("problems", "sentences", "tokens", "mentions", "entities", "triples")


@dataclass
class GxContext:
    """The GX objects one command reuses: the ephemeral context and a whole-dataframe batch definition per frame."""

    context: Any
    batch_definitions: dict[str, Any]


def make_gx_context() -> GxContext:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # nothing leaves this machine
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    datasource = context.data_sources.add_pandas("shapca")
    batch_definitions = {
        kind: datasource.add_dataframe_asset(kind).add_batch_definition_whole_dataframe(f"{kind}-whole")
        for kind in FRAME_KINDS
    }
    return GxContext(context, batch_definitions)


def _suite(gx_context: GxContext, name: str, expectations: list):
    import great_expectations as gx

    suites = gx_context.context.suites
    try:
        suites.delete(name)  # a command that validates the same dataset twice rebuilds the suite
    except Exception:  # noqa: BLE001 - GX raises its own not-found error types, which differ by version
        pass
    suite = suites.add(gx.ExpectationSuite(name=name))
    for expectation in expectations:
        suite.add_expectation(expectation)
    return suite


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
    gx_context: GxContext,
    kind: str,
    frame,
    suite_name: str,
    expectations: list,
    split: str,
    rows: list[ValidationRow],
    results: list[dict],
    examples_of: Callable[[], list[str]] | None = None,
) -> None:
    suite = _suite(gx_context, suite_name, expectations)
    batch = gx_context.batch_definitions[kind].get_batch(batch_parameters={"dataframe": frame})
    # SUMMARY keeps the counts and the first 20 offending values; indexing them by example id says where they are.
    result_format: dict[str, Any] = {"result_format": "SUMMARY"}
    if "id" in frame.columns:
        result_format["unexpected_index_column_names"] = ["id"]
    validation = batch.validate(suite, result_format=result_format)
    results.append({"suite": suite_name, "split": split, "frame": kind, "result": validation.to_json_dict()})
    for item in validation.results:
        config = item.expectation_config
        meta = dict(config.meta or {})
        kwargs = dict(config.kwargs or {})
        column = kwargs.get("column") or (
            f"{kwargs['column_A']}={kwargs['column_B']}" if "column_A" in kwargs else None
        )
        if item.exception_info and item.exception_info.get("raised_exception"):
            observed, unexpected, elements, value, examples = (
                f"error: {item.exception_info.get('exception_message')}", None, None, None, [],
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
    if spec.task == "ner":
        mentions = [m for e in examples for m in F.bio_mentions(e.tags)]
        starts_with_i = sum(1 for _, i in mentions if i)
        stats.update(
            mentions=len(mentions),
            mentions_by_type=dict(sorted(Counter(t for t, _ in mentions).items())),
            i_starts=starts_with_i,
            i_start_rate=starts_with_i / len(mentions) if mentions else 0.0,
        )
    elif spec.task == "re":
        relations = Counter(e.relation for e in examples)
        stats.update(
            sentences=len({F.example_key(e.tokens, e.image_id) for e in examples}),
            none_instances=relations.get(NO_RELATION, 0),
            related_instances=len(examples) - relations.get(NO_RELATION, 0),
        )
    else:
        stats.update(
            entities=sum(len(e.entities) for e in examples),
            triples=sum(len(e.triples) for e in examples),
            sentences_without_triples=sum(1 for e in examples if not e.triples),
        )
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
    gx_context: GxContext | None = None,
) -> ValidationReport:
    """Validate already-read splits (``read_split`` results) and contexts; see ``validate_dataset``."""
    has_published_set = contexts is not None and context_generator in spec.context_files
    if contexts is None:
        coverage, coverage_blocking = None, False
    elif min_context_coverage is not None:
        coverage, coverage_blocking = min_context_coverage, True
    else:
        # BLIP-2 captioned every Twitter image: anything less is a broken pull. mPLUG-Owl described ~70-88% of them,
        # and nothing covers MNRE's images: there the coverage is information, not a gate.
        coverage, coverage_blocking = 1.0, has_published_set and context_generator == "blip2"
    policy = S.Policy(
        max_bio_error_rate=max_bio_error_rate,
        min_context_coverage=coverage,
        coverage_blocking=coverage_blocking,
        max_empty_context_rate=max_empty_context_rate,
        check_published_sizes=check_published_sizes,
    )
    gx_context = gx_context or make_gx_context()
    context_texts = contexts.contexts.contexts if contexts is not None else None
    rows: list[ValidationRow] = []
    results: list[dict] = []
    stats: dict[str, Any] = {"splits": {}}

    train = splits["train"].examples
    train_sentences = {F.sentence_key(e.tokens) for e in train}
    train_examples = {F.example_key(e.tokens, e.image_id) for e in train}

    def problem_examples(problems):
        return lambda: [str(p) for p in problems[:5]]

    for split in SPLITS:
        read = splits[split]
        prefix = f"{spec.name}.{split}"
        _run(gx_context, "problems", F.problems_frame(read.problems), f"{prefix}.problems", S.problem_expectations(),
             split, rows, results, problem_examples(read.problems))
        is_train = split == "train"
        sentences = F.sentences_frame(
            spec.task,
            read.examples, context_texts, None if is_train else train_sentences, None if is_train else train_examples
        )
        _run(gx_context, "sentences", sentences, f"{prefix}.sentences", S.sentence_expectations(spec, split, policy),
             split, rows, results)
        if spec.task == "ner":
            _run(gx_context, "tokens", F.tokens_frame(read.examples), f"{prefix}.tokens",
                 S.token_expectations(spec, policy), split, rows, results)
            _run(gx_context, "mentions", F.mentions_frame(read.examples), f"{prefix}.mentions",
                 S.mention_expectations(spec, policy), split, rows, results)
        if spec.task == "joint":
            _run(gx_context, "entities", F.entities_frame(read.examples), f"{prefix}.entities",
                 S.entity_expectations(spec, policy), split, rows, results)
            _run(gx_context, "triples", F.triples_frame(read.examples), f"{prefix}.triples",
                 S.triple_expectations(spec, policy), split, rows, results)
        split_stats = _split_stats(spec, read.examples, context_texts)
        split_stats["reader_problems"] = len(read.problems)
        if not is_train:
            split_stats["text_shared_with_train"] = int(sentences["text_in_train"].sum()) if len(sentences) else 0
        stats["splits"][split] = split_stats
    if contexts is not None:
        _run(gx_context, "problems", F.problems_frame(contexts.problems), f"{spec.name}.contexts.problems",
             S.problem_expectations(), "contexts", rows, results, problem_examples(contexts.problems))
        stats["contexts"] = {
            "generator": context_generator,
            "images": len(context_texts),
            "published_set": has_published_set,
        }

    report = ValidationReport(dataset=spec.name, context_generator=context_generator, rows=rows, stats=stats)
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
    gx_context: GxContext | None = None,
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
        gx_context=gx_context,
    )
