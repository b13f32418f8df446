"""The context cache on S3 (moto's server over real HTTP, through boto3): the same records, shared by every worker
that points at the same URL, so a second worker on another host generates nothing."""

from __future__ import annotations

import json
from dataclasses import asdict

import boto3
import pytest
from PIL import Image
from s3_fixtures import S3TestEnv
from test_contexts_cache import PixelStatsGenerator

from components.contexts.cache import ContextCache, ContextRecord, S3ContextCache, cache_key, open_cache
from components.contexts.generate import generate_contexts


def _record(key: str, text: str = "a red bridge") -> ContextRecord:
    return ContextRecord(
        key=key, image_id="img0", generator="g", text=text, input={"image_sha256": "0" * 64}, created_at=1.0
    )


def test_open_cache_picks_the_store_by_location(s3_env: S3TestEnv, tmp_path):
    assert isinstance(open_cache(f"s3://{s3_env.bucket}/contexts"), S3ContextCache)
    assert isinstance(open_cache(tmp_path / "cache"), ContextCache)
    with pytest.raises(ValueError, match="expected s3://<bucket>"):
        S3ContextCache("s3:///no-bucket")


def test_records_round_trip_as_objects_under_the_prefix(s3_env: S3TestEnv):
    cache = S3ContextCache(f"s3://{s3_env.bucket}/team/contexts")
    key = cache_key("g", "describe", {"max_new_tokens": 8}, {"image_sha256": "0" * 64})
    assert cache.get(key) is None and key not in cache
    url = cache.put(_record(key))
    assert url == f"s3://{s3_env.bucket}/team/contexts/records/{key[:2]}/{key}.json"
    cache.put(_record(key, "a red bridge at night"))  # the same key replaces, never duplicates
    assert key in cache and cache.get(key).text == "a red bridge at night"
    assert [r.key for r in cache.records()] == [key]
    other = cache_key("g", "describe", {"max_new_tokens": 9}, {"image_sha256": "0" * 64})
    assert cache.get_many([key, other]) == {key: cache.get(key), other: None}
    with pytest.raises(ValueError, match="64 lowercase hex"):
        cache.get("../../etc/passwd")


def test_a_damaged_object_reads_as_a_miss(s3_env: S3TestEnv):
    cache = S3ContextCache(f"s3://{s3_env.bucket}/contexts")
    key = "ab" * 32
    s3 = boto3.client("s3", endpoint_url=s3_env.endpoint_url, region_name="us-east-1")
    s3.put_object(Bucket=s3_env.bucket, Key=cache.object_key(key), Body=b"{not json")
    assert cache.get(key) is None
    # A complete record, but of another key (a hand copy): a miss too, never the wrong context.
    s3.put_object(Bucket=s3_env.bucket, Key=cache.object_key(key), Body=json.dumps(asdict(_record("cd" * 32))))
    assert cache.get(key) is None


def test_a_second_worker_finds_every_context_the_first_one_wrote(s3_env: S3TestEnv, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (20 + i, 10), colour).save(images / f"img{i}.jpg", format="JPEG", quality=95)
    url = f"s3://{s3_env.bucket}/contexts"
    first, second = PixelStatsGenerator(images), PixelStatsGenerator(images)  # two workers, each its own model
    one = generate_contexts(["img0", "img1", "img2"], first, open_cache(url), progress=False)
    two = generate_contexts(["img2", "img1", "img0"], second, open_cache(url), progress=False)
    assert (one.misses, one.hits) == (3, 0)
    assert (two.misses, two.hits) == (0, 3) and second.generated == []
    assert two.contexts == one.contexts
