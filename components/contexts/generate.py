"""Turn image ids into contexts through the cache: look every id up, generate only the misses, write each result the
moment it exists (a reader, `store=False`, generates the misses in memory and writes nothing).

For each chunk of ids: `prepare` (read + hash), look the key up, group the misses by key (the same picture under two
ids is generated once), hand the unique misses to the generator and store each context as it is yielded. A killed run
therefore loses only what was in flight, and the next run finds everything else as hits.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from components.common.images import ImageProblem
from components.contexts.base import ContextGenerator, GenerationFailure
from components.contexts.cache import ContextCache, ContextRecord, S3ContextCache

logger = logging.getLogger(__name__)


@dataclass
class GenerationReport:
    """What one run (or one shard of it) did. Counts are per image id."""

    generator: str
    contexts: dict[str, str] = field(default_factory=dict)  # image_id -> context, hits and new ones alike
    hits: int = 0  # found in the cache: nothing paid
    misses: int = 0  # generated (paid for) in this run
    reused: int = 0  # same bytes as another id generated in this run: nothing paid
    failures: list[GenerationFailure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def requested(self) -> int:
        return self.hits + self.misses + self.reused + len(self.failures)

    def failure_reasons(self) -> Counter:
        """Failures grouped by kind: the reason up to its first colon ("missing", "oversized", ...)."""
        return Counter(f.reason.split(":", 1)[0] for f in self.failures)

    def merge(self, other: GenerationReport) -> GenerationReport:
        if other.generator != self.generator:
            raise ValueError(f"cannot merge reports of {self.generator!r} and {other.generator!r}")
        return GenerationReport(
            generator=self.generator,
            contexts=self.contexts | other.contexts,
            hits=self.hits + other.hits,
            misses=self.misses + other.misses,
            reused=self.reused + other.reused,
            failures=self.failures + other.failures,
            seconds=max(self.seconds, other.seconds),  # shards run side by side: wall time is the longest
        )

    def summary(self) -> str:
        line = (
            f"{self.generator}: {self.requested} images, {self.hits} cache hits, {self.misses} generated, "
            f"{self.reused} reused, {len(self.failures)} failures in {self.seconds:.1f}s"
        )
        if self.misses == 0:
            line += " (nothing to generate)"
        reasons = self.failure_reasons()
        if reasons:
            line += " [" + ", ".join(f"{kind}: {n}" for kind, n in reasons.most_common()) + "]"
        return line


def generate_contexts(
    image_ids: Iterable[str],
    generator: ContextGenerator[Any],
    cache: ContextCache | S3ContextCache,
    *,
    chunk_size: int = 64,
    progress: bool = True,
    desc: str | None = None,
    store: bool = True,
) -> GenerationReport:
    """Contexts for `image_ids` (duplicates collapse), from the cache when there, from `generator` when not; each
    generated context is stored in the cache unless `store` is False."""
    spec = generator.spec
    ids = list(dict.fromkeys(image_ids))  # unique, order kept
    report = GenerationReport(generator=spec.generator_id)
    t0 = time.perf_counter()
    bar = tqdm(total=len(ids), desc=desc or spec.generator_id, unit="img", disable=not progress)
    try:
        for start in range(0, len(ids), chunk_size):
            chunk = ids[start : start + chunk_size]
            pending: dict[str, list] = {}  # key -> items waiting for it (first one is generated)
            prepared = []  # (item, key) of the chunk's readable images
            for image_id in chunk:
                try:
                    item = generator.prepare(image_id)
                except ImageProblem as problem:
                    report.failures.append(GenerationFailure(image_id, problem.reason))
                    bar.update(1)
                    continue
                prepared.append((item, spec.key(item.key_material)))
            found = cache.get_many(key for _, key in prepared)  # one round of lookups per chunk
            for item, key in prepared:
                image_id = item.image_id
                record = found[key]
                if record is not None:
                    report.contexts[image_id] = record.text
                    report.hits += 1
                    bar.update(1)
                else:
                    pending.setdefault(key, []).append(item)
            if not pending:
                continue
            firsts = {id(items[0]): key for key, items in pending.items()}
            for item, result in generator.generate([items[0] for items in pending.values()]):
                key = firsts.pop(id(item))  # a KeyError here is a generator yielding an item twice or a foreign one
                waiting = pending[key]
                if isinstance(result, GenerationFailure):
                    report.failures.extend(GenerationFailure(other.image_id, result.reason) for other in waiting)
                else:
                    if store:
                        cache.put(
                            ContextRecord(
                                key=key,
                                image_id=item.image_id,
                                generator=spec.generator_id,
                                text=result,
                                input=item.key_material,
                                created_at=time.time(),
                            )
                        )
                    for other in waiting:
                        report.contexts[other.image_id] = result
                    report.misses += 1
                    report.reused += len(waiting) - 1
                bar.update(len(waiting))
            for key in firsts.values():  # never drop an image silently, even for a generator that skipped one
                for other in pending[key]:
                    report.failures.append(GenerationFailure(other.image_id, "no result: the generator skipped it"))
                bar.update(len(pending[key]))
    finally:
        bar.close()
    report.seconds = time.perf_counter() - t0
    logger.info(report.summary())
    return report
