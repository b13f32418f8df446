"""The context cache and the image guard, through the real generate_contexts loop and the precomputed-free backends'
shared reading code: keys, atomic records, hits on a rerun, failures with reasons, context-set files."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from components.common.images import ImageProblem, read_image
from components.contexts.base import GenerationFailure, GeneratorSpec, ImageGenerator
from components.contexts.cache import ContextCache, ContextRecord, cache_key
from components.contexts.context_set import read_context_set, write_context_set
from components.contexts.generate import generate_contexts
from components.data.records import ContextSet, DataFormatError


class PixelStatsGenerator(ImageGenerator):
    """A real (if simple) image describer: it decodes each image and writes its size and mean colour.

    It counts what it is asked to generate, which is what the cache must keep at zero on a rerun."""

    def __init__(self, image_dir: Path, max_pixels: int = 10_000_000):
        super().__init__(image_dir, max_pixels, max_image_bytes=5_000_000)
        self.spec = GeneratorSpec(generator_id="pixel-stats", prompt="describe", params={"max_new_tokens": 8})
        self.generated: list[str] = []

    def generate(self, items):
        decoded, failures = self.decode_all(items)
        yield from failures
        for item, image in decoded:
            self.generated.append(item.image_id)
            mean = tuple(round(m) for m in ImageStat.Stat(image).mean)
            yield item, f"{image.size[0]}x{image.size[1]} mean {mean}"


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims `width x height` pixels: what a decompression bomb looks like to Image.open."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )


@pytest.fixture()
def image_dir(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (20 + i, 10), colour).save(images / f"img{i}.jpg", format="JPEG", quality=95)
    # The same picture under a second id: generated once.
    (images / "img0_copy.jpg").write_bytes((images / "img0.jpg").read_bytes())
    (images / "broken.jpg").write_bytes((images / "img1.jpg").read_bytes()[:40])  # truncated JPEG
    (images / "notimage.jpg").write_text("this is not an image")
    Image.new("RGB", (200, 200), (9, 9, 9)).save(images / "big.jpg", format="JPEG")
    _png_header_only(images / "bomb.jpg", 100_000, 100_000)  # 10^10 pixels: PIL's own DecompressionBombError
    return images


def test_cache_key_depends_on_every_input():
    base = cache_key("gen", "prompt", {"max_new_tokens": 8}, {"image_sha256": "a" * 64})
    assert len(base) == 64
    assert base == cache_key("gen", "prompt", {"max_new_tokens": 8}, {"image_sha256": "a" * 64})
    assert base != cache_key("gen2", "prompt", {"max_new_tokens": 8}, {"image_sha256": "a" * 64})
    assert base != cache_key("gen", "prompt!", {"max_new_tokens": 8}, {"image_sha256": "a" * 64})
    assert base != cache_key("gen", "prompt", {"max_new_tokens": 9}, {"image_sha256": "a" * 64})
    assert base != cache_key("gen", "prompt", {"max_new_tokens": 8}, {"image_sha256": "b" * 64})


def test_put_is_atomic_and_replaces_instead_of_duplicating(tmp_path: Path):
    cache = ContextCache(tmp_path / "c", fsync=True)
    key = cache_key("g", "p", {}, {"image_sha256": "0" * 64})
    assert cache.get(key) is None
    cache.put(ContextRecord(key=key, image_id="x", generator="g", text="first"))
    cache.put(ContextRecord(key=key, image_id="x", generator="g", text="second"))
    files = list((tmp_path / "c" / "records").rglob("*"))
    assert [p.name for p in files if p.is_file()] == [f"{key}.json"]  # no temp files, no second record
    assert cache.get(key).text == "second"
    # A leftover temp file of a killed writer is invisible to readers and swept when old.
    stray = cache.path_for(key).parent / ".deadbeef-123.tmp"
    stray.write_text('{"key": "partial')
    assert [r.text for r in cache.records()] == ["second"]
    assert cache.sweep_temp(older_than_s=0) == 1 and not stray.exists()
    # A damaged record (not something this writer produces) reads as a miss, not as a crash or a wrong text.
    cache.path_for(key).write_text('{"key": "')
    assert cache.get(key) is None
    with pytest.raises(ValueError, match="64 lowercase hex"):
        cache.path_for("../../etc/passwd")


def test_second_run_generates_nothing_and_failures_carry_reasons(tmp_path: Path, image_dir: Path):
    cache = ContextCache(tmp_path / "cache", fsync=False)
    ids = ["img0", "img1", "img2", "img0_copy", "missing", "broken", "notimage", "big", "bomb", "img1"]
    generator = PixelStatsGenerator(image_dir, max_pixels=10_000)  # "big" (40,000 px) is over this limit
    first = generate_contexts(ids, generator, cache, progress=False)

    assert sorted(generator.generated) == ["img0", "img1", "img2"]  # img0_copy shares img0's bytes
    assert (first.hits, first.misses, first.reused) == (0, 3, 1)  # "img1" twice in the list is one image
    assert first.contexts["img0"] == first.contexts["img0_copy"] == "20x10 mean (254, 0, 0)"
    assert first.contexts["img2"].startswith("22x10 mean (0, 0, 25")
    reasons = {f.image_id: f.reason for f in first.failures}
    assert set(reasons) == {"missing", "broken", "notimage", "big", "bomb"}
    assert reasons["missing"].startswith("missing: no file") and "missing.jpg" in reasons["missing"]
    assert reasons["broken"].startswith("unreadable:")
    assert reasons["notimage"].startswith("unreadable:")
    assert reasons["big"].startswith("oversized: 200x200 = 40000 pixels exceeds the limit of 10000")
    assert reasons["bomb"].startswith("oversized:")
    assert dict(first.failure_reasons()) == {"missing": 1, "unreadable": 2, "oversized": 2}
    assert len(list(cache.records())) == 3

    rerun_generator = PixelStatsGenerator(image_dir, max_pixels=10_000)
    second = generate_contexts(ids, rerun_generator, cache, chunk_size=3, progress=False)
    assert rerun_generator.generated == []
    assert (second.hits, second.misses, second.reused) == (4, 0, 0)
    assert second.contexts == first.contexts
    assert "nothing to generate" in second.summary()

    # A different prompt is a different key: everything is generated again, into new records.
    other = PixelStatsGenerator(image_dir, max_pixels=10_000)
    other.spec = GeneratorSpec(generator_id="pixel-stats", prompt="other prompt", params={"max_new_tokens": 8})
    third = generate_contexts(["img0", "img1"], other, cache, progress=False)
    assert third.misses == 2 and sorted(other.generated) == ["img0", "img1"]
    assert len(list(cache.records())) == 5


def test_read_image_rejects_files_over_the_byte_limit(image_dir: Path):
    with pytest.raises(ImageProblem, match="oversized: .* bytes, over the limit of 100"):
        read_image(image_dir, "big", max_bytes=100)
    item = read_image(image_dir, "img0", max_bytes=10_000)
    assert item.data_url(max_pixels=1_000).startswith("data:image/jpeg;base64,")


def test_context_set_round_trip_and_tamper_detection(tmp_path: Path):
    contexts = ContextSet(generator="g", contexts={"b": "two\nlines", "a": "one ünïcode"})
    published = write_context_set(tmp_path / "sets" / "d-g.jsonl", contexts, {"dataset": "d"})
    assert published.content_hash == contexts.content_hash()
    lines = published.path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["image_id"] for line in lines] == ["a", "b"]
    back = read_context_set(published.path)
    assert back == contexts and back.content_hash() == published.content_hash
    manifest = json.loads(published.manifest_path.read_text())
    assert manifest["num_contexts"] == 2 and manifest["dataset"] == "d"

    published.path.write_text(lines[0] + "\n" + lines[1].replace("two", "TWO") + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="does not match the contexts"):
        read_context_set(published.path)
    published.path.write_text(lines[0] + "\n" + lines[0] + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"d-g.jsonl:2: image id 'a' appears twice"):
        read_context_set(published.path)
    published.path.write_text('{"image_id": 3}\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r":1: expected"):
        read_context_set(published.path)


def test_failure_from_generator_is_recorded_for_every_id_waiting_on_it(tmp_path: Path, image_dir: Path):
    class Refusing(PixelStatsGenerator):
        def generate(self, items):
            for item in items:
                yield item, GenerationFailure(item.image_id, "rejected: HTTP 400: image refused")

    cache = ContextCache(tmp_path / "cache", fsync=False)
    report = generate_contexts(["img0", "img0_copy"], Refusing(image_dir), cache, progress=False)
    assert sorted(f.image_id for f in report.failures) == ["img0", "img0_copy"]
    assert report.misses == 0 and list(cache.records()) == []  # a failure is not cached: the next run retries it


def test_an_image_a_generator_skips_is_a_failure_not_a_silent_gap(tmp_path: Path, image_dir: Path):
    class Skipping(PixelStatsGenerator):
        def generate(self, items):
            yield from super().generate([item for item in items if item.image_id != "img1"])

    report = generate_contexts(
        ["img0", "img1", "img2"], Skipping(image_dir), ContextCache(tmp_path / "c"), progress=False
    )
    assert sorted(report.contexts) == ["img0", "img2"]
    assert [(f.image_id, f.reason) for f in report.failures] == [("img1", "no result: the generator skipped it")]
