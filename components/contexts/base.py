"""The one interface every context backend implements, and the pieces they share.

A generator turns image ids into contexts in two steps, so that the cache can be consulted between them:
    item = generator.prepare(image_id)         # cheap: read and hash the bytes (or look up the source file)
    key = generator.spec.key(item.key_material)
    ... only the misses go on to ...
    for item, text_or_failure in generator.generate(items): ...   # the expensive part, yielded as it completes
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from components.common.images import ImageInput, ImageProblem, read_image
from components.contexts.cache import cache_key


@dataclass(frozen=True)
class GeneratorSpec:
    """What decides the text a generator writes; the three fields go into every cache key."""

    generator_id: str  # e.g. "hf:llava-1.5-7b-hf@<fingerprint>", "openai:<model>", "precomputed:blip2"
    prompt: str
    params: dict = field(default_factory=dict)

    def key(self, key_material: dict) -> str:
        return cache_key(self.generator_id, self.prompt, self.params, key_material)


@dataclass(frozen=True)
class GenerationFailure:
    """An image that got no context, and why (missing, unreadable, oversized, server error ...)."""

    image_id: str
    reason: str


class Item(Protocol):
    @property
    def image_id(self) -> str: ...

    @property
    def key_material(self) -> dict: ...


ItemT = TypeVar("ItemT", bound=Item)  # what a backend's prepare makes and its generate takes back


@runtime_checkable
class ContextGenerator(Protocol[ItemT]):
    spec: GeneratorSpec

    def prepare(self, image_id: str) -> ItemT:
        """Read what the key needs; raises ImageProblem for a missing or unreadable input."""
        ...

    def generate(self, items: list[ItemT]) -> Iterator[tuple[ItemT, str | GenerationFailure]]:
        """Yield (item, context) or (item, failure) once for each item, in completion order, with the very item
        objects it was given. An exception means the generator itself is broken (model, server): the run stops."""
        ...


class ImageGenerator:
    """Base of the backends that look at pixels (hf, openai): items are the image files' bytes."""

    spec: GeneratorSpec

    def __init__(self, image_dir: Path | None, max_pixels: int, max_image_bytes: int):
        if image_dir is None:
            raise ValueError("this backend reads the images: set image_dir (--image-dir), where <image_id>.jpg live")
        self.image_dir = Path(image_dir)
        self.max_pixels = max_pixels
        self.max_image_bytes = max_image_bytes

    def prepare(self, image_id: str) -> ImageInput:
        return read_image(self.image_dir, image_id, self.max_image_bytes)

    def decode_all(self, items: Iterable[ImageInput]):
        """Split items into decoded (item, RGB image) pairs and failures, keeping the guard's reason."""
        decoded, failures = [], []
        for item in items:
            try:
                decoded.append((item, item.decode(self.max_pixels)))
            except ImageProblem as problem:
                failures.append((item, GenerationFailure(item.image_id, problem.reason)))
        return decoded, failures
