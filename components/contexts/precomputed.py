"""The precomputed backend: contexts an LMM already wrote elsewhere, imported through the same cache and context-set
writer as generated ones. Ships with the published BLIP-2 captions and mPLUG-Owl descriptions (data/contexts/), the
embedded default because the tweet images themselves are not published.

Cache key: the images are absent, so there are no bytes to hash. A record is keyed on
    generator id ("precomputed:<generator>") + image id + sha256 of the source file(s),
so a changed source file (a corrected caption file, a new release) re-imports everything, and an unchanged one is all
cache hits. mPLUG-Owl's three files are one set shared by both Twitter datasets; an image imported for one dataset is
a hit for the other.
An image id the source does not describe is a failure with that reason (mPLUG-Owl covers about 70% of Twitter-2015).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from components.common.hashing import sha256_named_files
from components.contexts.base import GenerationFailure, GeneratorSpec

PRECOMPUTED_GENERATORS = ("blip2", "mplug-owl")


@dataclass(frozen=True)
class PrecomputedItem:
    image_id: str
    source_sha256: str

    @property
    def key_material(self) -> dict:
        return {"image_id": self.image_id, "source_sha256": self.source_sha256}


def source_files(generator: str, dataset: str, data_dir: Path) -> list[Path]:
    from components.datasets import get_spec

    if generator not in PRECOMPUTED_GENERATORS:
        raise ValueError(f"precomputed generator {generator!r}: expected one of {', '.join(PRECOMPUTED_GENERATORS)}")
    return [Path(data_dir) / rel for rel in get_spec(dataset).context_files.get(generator, ())]


def hash_files(paths: list[Path]) -> str:
    return sha256_named_files([(p.name, p) for p in paths])


class PrecomputedGenerator:
    def __init__(self, generator: str, dataset: str, data_dir: Path):
        from components.datasets import load_contexts

        self.generator = generator
        self.files = source_files(generator, dataset, data_dir)
        for path in self.files:
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such context file for {generator}/{dataset} (run `dvc pull`)")
        # Strict: a malformed source file stops the import with the file and line, it is never half-imported.
        self.source = load_contexts(generator, dataset, Path(data_dir))
        self.source_sha256 = hash_files(self.files)
        self.spec = GeneratorSpec(generator_id=f"precomputed:{generator}", prompt="", params={})

    def prepare(self, image_id: str) -> PrecomputedItem:
        return PrecomputedItem(image_id=image_id, source_sha256=self.source_sha256)

    def generate(self, items: list[PrecomputedItem]) -> Iterator[tuple[PrecomputedItem, str | GenerationFailure]]:
        names = ", ".join(str(p) for p in self.files) or "no published file"
        for item in items:
            text = self.source.contexts.get(item.image_id)
            if text is None:
                reason = f"not in source: {self.generator} has no context in {names}"
                yield item, GenerationFailure(item.image_id, reason)
            else:
                yield item, text
