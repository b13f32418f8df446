"""The context cache: one generated context per key, never generated twice, never half-written.

Key (`cache_key`): sha256 over the canonical JSON of
    {generator id, prompt, generation parameters} + what identifies the input,
where the input is the sha256 of the image bytes for the hf and openai backends, and (image id, sha256 of the source
file) for the precomputed backend, whose images are absent.

Format: one small JSON file per key, `<root>/records/<key[:2]>/<key>.json`, written to a temporary file in the same
directory, flushed (and fsync'ed unless disabled) and renamed over the final name with `os.replace`. Chosen over an
append-only JSONL because
- a rename is atomic: a reader (or a resumed run) sees a complete record or none, so there is no torn last line to
  repair and no partial record to skip;
- the key is the file name, so writing a key twice replaces one file and duplicates cannot exist after a resume;
- concurrent writers (threads of the Prefect task runner, Dask or Ray worker processes on a shared file system) need
  no lock and no compaction step;
- a record maps one-to-one onto an object in a bucket: `S3ContextCache` keeps the same records as
  `s3://<bucket>/<prefix>/records/<key[:2]>/<key>.json`, so workers on different hosts share one cache.
The cost is one small file per image (about 13k for both Twitter sets), which any file system handles; the two-hex-
character shard directories keep each directory under a few hundred entries per 100k records.
A process killed between writing and renaming leaves a `.tmp` file that readers ignore; `sweep_temp` removes old ones.
An S3 PUT is atomic by itself (a reader sees the whole object or none), so the S3 cache has no temporary objects.

`open_cache(location)` picks the store: an `s3://` URL, or a local directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from components.common.object_store import parse_s3_url

logger = logging.getLogger(__name__)

_TMP_SUFFIX = ".tmp"
_KEY = re.compile(r"[0-9a-f]{64}")


def _check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise ValueError(f"cache key {key!r}: expected 64 lowercase hex characters (a sha256)")
    return key


def _parse_record(raw: str | bytes, key: str, where) -> ContextRecord | None:
    """The record stored under `key`, or None (a miss) when what is stored is damaged or holds another key."""
    try:
        record = ContextRecord(**json.loads(raw))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
        # Cannot come from these writers (renames and PUTs are atomic); a damaged disk or a hand edit. Regenerate it.
        logger.warning("cache record %s is damaged (%s); treating it as a miss", where, exc)
        return None
    if record.key != key:
        logger.warning("cache record %s holds key %s; treating it as a miss", where, record.key)
        return None
    return record


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def cache_key(generator_id: str, prompt: str, params: dict, key_material: dict) -> str:
    """sha256 of everything that decides a context's text: the input, the generator, the prompt, the parameters."""
    payload = {"generator": generator_id, "prompt": prompt, "params": params, "input": key_material}
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ContextRecord:
    key: str
    image_id: str  # the id it was first generated for; the same bytes under another id reuse the record
    generator: str  # generator id (model fingerprint included)
    text: str
    input: dict = field(default_factory=dict)  # the key material: image sha256, or image id + source hash
    created_at: float = 0.0  # unix time


class ContextCache:
    """A directory of context records, safe to share between threads and processes."""

    def __init__(self, root: str | Path, fsync: bool = True):
        self.root = Path(root)
        self.records_dir = self.root / "records"
        self.fsync = fsync

    def path_for(self, key: str) -> Path:
        return self.records_dir / _check_key(key)[:2] / f"{key}.json"

    def get(self, key: str) -> ContextRecord | None:
        path = self.path_for(key)
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return _parse_record(raw, key, path)

    def get_many(self, keys: Iterable[str]) -> dict[str, ContextRecord | None]:
        return {key: self.get(key) for key in keys}

    def put(self, record: ContextRecord) -> Path:
        """Atomically write one record: after this returns the record is complete on disk, before it, absent."""
        path = self.path_for(record.key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{record.key[:8]}-", suffix=_TMP_SUFFIX)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(canonical_json(asdict(record)))
                fh.flush()
                if self.fsync:
                    os.fsync(fh.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        if self.fsync:
            # The rename itself must reach the disk for the record to survive a machine crash.
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return path

    def __contains__(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def records(self) -> Iterator[ContextRecord]:
        """Every complete record (temporary files of interrupted writes are skipped)."""
        if not self.records_dir.is_dir():
            return
        for path in sorted(self.records_dir.glob("*/*.json")):
            record = self.get(path.stem)
            if record is not None:
                yield record

    def sweep_temp(self, older_than_s: float = 3600.0) -> int:
        """Delete temporary files left by killed writers; recent ones may belong to a live writer and are kept."""
        if not self.records_dir.is_dir():
            return 0
        cutoff = time.time() - older_than_s
        removed = 0
        for tmp in self.records_dir.glob(f"*/*{_TMP_SUFFIX}"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed


class S3ContextCache:
    """The same records as objects in a bucket, shared by every worker that points at the same URL.

    boto3 takes everything else from the environment, as every other S3 client of the stack does (dvc-s3, s3fs,
    MLflow): the endpoint from AWS_ENDPOINT_URL (MinIO, moto), the region and the credentials from the usual chain.
    """

    LOOKUP_THREADS = 16  # lookups of one chunk run concurrently: each is one small GET

    def __init__(self, url: str):
        import boto3

        try:
            self.bucket, prefix = parse_s3_url(url)
        except ValueError as exc:
            raise ValueError(f"context cache {exc}") from None
        self.url = url.rstrip("/")
        self.records_prefix = "/".join(p for p in (prefix, "records") if p) + "/"
        from botocore.config import Config

        # A session per cache (sessions are not thread-safe), with a connection per lookup thread.
        self.client = boto3.session.Session().client("s3", config=Config(max_pool_connections=self.LOOKUP_THREADS))

    def object_key(self, key: str) -> str:
        return f"{self.records_prefix}{_check_key(key)[:2]}/{key}.json"

    def get(self, key: str) -> ContextRecord | None:
        object_key = self.object_key(key)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=object_key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None
        return _parse_record(body, key, f"s3://{self.bucket}/{object_key}")

    def get_many(self, keys: Iterable[str]) -> dict[str, ContextRecord | None]:
        keys = list(keys)
        with ThreadPoolExecutor(max_workers=min(self.LOOKUP_THREADS, max(1, len(keys)))) as pool:
            return dict(zip(keys, pool.map(self.get, keys), strict=False))

    def put(self, record: ContextRecord) -> str:
        object_key = self.object_key(record.key)
        self.client.put_object(
            Bucket=self.bucket,
            Key=object_key,
            ContentType="application/json",
            Body=canonical_json(asdict(record)).encode("utf-8"),
        )
        return f"s3://{self.bucket}/{object_key}"

    def __contains__(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def records(self) -> Iterator[ContextRecord]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.records_prefix)
        for page in pages:
            for item in page.get("Contents", []):
                key = item["Key"].rsplit("/", 1)[-1].removesuffix(".json")
                if _KEY.fullmatch(key):
                    record = self.get(key)
                    if record is not None:
                        yield record

    def sweep_temp(self, older_than_s: float = 3600.0) -> int:
        return 0  # PUTs are atomic: there is never a partial object to remove


def open_cache(location: str | Path, fsync: bool = True) -> ContextCache | S3ContextCache:
    """The cache at `location`: `s3://bucket/prefix` (shared by workers on any host) or a local directory."""
    if str(location).startswith("s3://"):
        return S3ContextCache(str(location))
    return ContextCache(location, fsync=fsync)
