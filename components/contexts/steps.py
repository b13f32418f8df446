"""The steps of a context run, each one function, shared by `shapca contexts` (in one process) and the
generate-contexts Prefect flow (one task per step, one task per shard):

    split_ids = list_image_ids(cfg)                        # split -> the image id of every tweet, in file order
    shards = shard_ids(unique_ids(split_ids), cfg.num_shards)
    reports = [run_shard(cfg, shard) for shard in shards]  # cache lookups + generation of the misses
    published = publish(cfg, merge_reports(reports), split_ids)
    markdown = report_markdown(published)

`run_contexts` is those steps in one process: a publisher (`shapca contexts`, `shapca train`). `read_contexts` is the
reader beside it (evaluation, benchmarks): the same contexts from the same cache, written nowhere.
"""

from __future__ import annotations

import threading
from typing import Any

from components.contexts.base import ContextGenerator
from components.contexts.cache import open_cache
from components.contexts.context_set import PublishedSet, set_paths, split_coverage, write_context_set
from components.contexts.generate import GenerationReport, generate_contexts
from components.contexts.settings import ContextsConfig
from components.data.records import ContextSet


def list_image_ids(cfg: ContextsConfig) -> dict[str, list[str]]:
    """split -> the image id of each example (tweet or MNRE instance), duplicates kept so coverage counts examples."""
    from components.datasets import SPLITS, get_spec, load_split

    spec = get_spec(cfg.dataset)
    return {
        split: [ex.image_id for ex in load_split(cfg.dataset, split, cfg.data_dir)]
        for split in SPLITS
        if split in spec.files
    }


def limit_ids(split_ids: dict[str, list[str]], limit_per_split: int | None) -> dict[str, list[str]]:
    """The first `limit_per_split` examples of each split (quick runs and tests); None keeps all."""
    if limit_per_split is None:
        return split_ids
    return {split: ids[:limit_per_split] for split, ids in split_ids.items()}


def unique_ids(split_ids: dict[str, list[str]]) -> list[str]:
    return list(dict.fromkeys(i for ids in split_ids.values() for i in ids))


def shard_ids(ids: list[str], num_shards: int) -> list[list[str]]:
    """Contiguous, near-equal shards (contiguous keeps each shard's images together on disk); no empty shard."""
    num_shards = max(1, min(num_shards, len(ids)))
    size, extra = divmod(len(ids), num_shards)
    shards, start = [], 0
    for index in range(num_shards):
        end = start + size + (1 if index < extra else 0)
        shards.append(ids[start:end])
        start = end
    return [s for s in shards if s]


def build_generator(cfg: ContextsConfig) -> ContextGenerator[Any]:
    """The backend the config names, constructed (the hf model itself loads on the first miss)."""
    if cfg.backend == "precomputed":
        from components.contexts.precomputed import PrecomputedGenerator

        return PrecomputedGenerator(cfg.generator_name(), cfg.dataset, cfg.data_dir)
    if cfg.backend == "hf":
        from components.contexts.hf import HFGenerator

        return HFGenerator(
            cfg.hf,
            cfg.prompt,
            cfg.generation,
            cfg.image_dir,
            cfg.max_pixels,
            cfg.max_image_bytes,
            name=cfg.generator_name(),
        )
    if cfg.backend == "openai":
        from components.contexts.openai_compat import OpenAIGenerator

        return OpenAIGenerator(
            cfg.openai, cfg.prompt, cfg.generation, cfg.image_dir, cfg.max_pixels, cfg.max_image_bytes
        )
    raise ValueError(f"unknown backend {cfg.backend!r}: expected precomputed, hf or openai")


def source_fingerprint(cfg: ContextsConfig) -> str:
    """What a built generator was built from besides the config: the source files' or the model's contents."""
    if cfg.backend == "precomputed":
        from components.contexts.precomputed import hash_files, source_files

        return hash_files(source_files(cfg.generator_name(), cfg.dataset, cfg.data_dir))
    if cfg.backend == "hf" and cfg.hf.model_path is not None:
        from components.contexts.hf import model_fingerprint

        return model_fingerprint(cfg.hf.model_path)
    return ""


# One generator per (config, source) per process: the task threads of a flow share one loaded model / one HTTP client,
# and each Dask or Ray worker process builds its own once. The source fingerprint is part of the key so that a
# long-lived worker never serves a later run from a caption file or model that has since changed.
_GENERATORS: dict[tuple[str, str], ContextGenerator[Any]] = {}
_GENERATORS_LOCK = threading.Lock()


def shared_generator(cfg: ContextsConfig) -> ContextGenerator[Any]:
    key = (cfg.model_dump_json(), source_fingerprint(cfg))
    with _GENERATORS_LOCK:
        if key not in _GENERATORS:
            for stale in [k for k in _GENERATORS if k[0] == key[0]]:
                del _GENERATORS[stale]  # the same config over changed sources: free the old model
            _GENERATORS[key] = build_generator(cfg)
        return _GENERATORS[key]


def run_shard(
    cfg: ContextsConfig, image_ids: list[str], progress: bool = True, desc: str | None = None
) -> GenerationReport:
    cache = open_cache(cfg.records_location(), fsync=cfg.fsync_records())
    return generate_contexts(
        image_ids, shared_generator(cfg), cache, chunk_size=cfg.chunk_size, progress=progress, desc=desc
    )


def merge_reports(reports: list[GenerationReport]) -> GenerationReport:
    if not reports:
        raise ValueError("no shard reports to merge")
    merged = reports[0]
    for report in reports[1:]:
        merged = merged.merge(report)
    return merged


def publish(cfg: ContextsConfig, report: GenerationReport, split_ids: dict[str, list[str]]) -> PublishedSet:
    """Write the context set of this run with its manifest: coverage per split, content hash, run counts, failures."""
    generator = shared_generator(cfg)
    contexts = ContextSet(generator=cfg.generator_name(), contexts=dict(report.contexts))
    path, _ = set_paths(cfg.cache_dir, cfg.dataset, cfg.generator_name())
    manifest = {
        "dataset": cfg.dataset,
        "backend": cfg.backend,
        "generator_id": generator.spec.generator_id,
        "prompt": generator.spec.prompt,
        "params": generator.spec.params,
        "coverage": split_coverage(contexts, split_ids),
        "run": {
            "hits": report.hits,
            "misses": report.misses,
            "reused": report.reused,
            "failures": len(report.failures),
            "failure_kinds": dict(report.failure_reasons()),
            "seconds": round(report.seconds, 3),
        },
        "failures": [
            {"image_id": f.image_id, "reason": f.reason} for f in sorted(report.failures, key=lambda f: f.image_id)
        ],
    }
    return write_context_set(path, contexts, manifest)


def run_contexts(
    cfg: ContextsConfig, progress: bool = True, limit_per_split: int | None = None
) -> tuple[GenerationReport, PublishedSet]:
    """The whole run in this process (what `shapca contexts` and `shapca train` call): list, generate through the
    cache, publish. The generate-contexts flow runs the same steps as Prefect tasks."""
    open_cache(cfg.records_location()).sweep_temp()
    split_ids = limit_ids(list_image_ids(cfg), limit_per_split)
    report = run_shard(cfg, unique_ids(split_ids), progress=progress, desc=f"{cfg.dataset}/{cfg.generator_name()}")
    return report, publish(cfg, report, split_ids)


def read_contexts(cfg: ContextsConfig, limit_per_split: int | None = None) -> ContextSet:
    """The context set `run_contexts` would publish, without writing anything: the cache is only read, a miss is
    generated in memory and not stored (free for the precomputed backend), and no set file is written."""
    split_ids = limit_ids(list_image_ids(cfg), limit_per_split)
    cache = open_cache(cfg.records_location())
    report = generate_contexts(
        unique_ids(split_ids), shared_generator(cfg), cache, chunk_size=cfg.chunk_size, progress=False, store=False
    )
    return ContextSet(generator=cfg.generator_name(), contexts=dict(sorted(report.contexts.items())))  # file order


def report_text(published: PublishedSet) -> str:
    """Plain-text summary for the terminal."""
    m = published.manifest
    run = m["run"]
    lines = [
        f"{m['dataset']} / {m['generator']} ({m['generator_id']}): {run['hits']} cache hits, "
        f"{run['misses']} generated, "
        f"{run['reused']} reused, {run['failures']} failures in {run['seconds']:.1f}s"
        + (" (nothing to generate)" if run["misses"] == 0 else ""),
    ]
    if run["failure_kinds"]:
        lines.append("  failures: " + ", ".join(f"{k}: {n}" for k, n in sorted(run["failure_kinds"].items())))
    for split, c in m["coverage"].items():
        lines.append(
            f"  {split:5s} coverage {c['coverage']:7.2%}  ({c['with_context']}/{c['tweets']} examples, "
            f"{c['images_with_context']}/{c['images']} images)"
        )
    lines.append(f"  context set: {published.path}")
    lines.append(f"  content hash: {published.content_hash}")
    return "\n".join(lines)


def report_markdown(published: PublishedSet) -> str:
    """Markdown for the flow's artifact: coverage per split, cache hits and failures."""
    m = published.manifest
    run = m["run"]
    out = [
        f"# Contexts: {m['dataset']} / {m['generator']}",
        "",
        f"- generator id: `{m['generator_id']}`",
        f"- context set: `{published.path}` ({m['num_contexts']} contexts)",
        f"- content hash: `{published.content_hash}`",
        f"- cache hits: {run['hits']}, generated: {run['misses']}, reused: {run['reused']}, "
        f"failures: {run['failures']}, time: {run['seconds']:.1f}s",
        "",
        "| split | examples | with context | coverage | images | images with context |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for split, c in m["coverage"].items():
        out.append(
            f"| {split} | {c['tweets']} | {c['with_context']} | {c['coverage']:.2%} | {c['images']} | "
            f"{c['images_with_context']} |"
        )
    if run["failure_kinds"]:
        out += ["", "| failure | images |", "| --- | ---: |"]
        out += [f"| {kind} | {n} |" for kind, n in sorted(run["failure_kinds"].items())]
        out += ["", "First failures:", ""]
        out += [f"- `{f['image_id']}`: {f['reason']}" for f in m["failures"][:20]]
    return "\n".join(out) + "\n"
