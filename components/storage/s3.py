"""S3-compatible object storage through boto3: settings, a client, directory sync and a write-once blob store.

Works against AWS S3, MinIO (the stack in infra/) and moto's server (the tests); an endpoint override selects the
store. Credentials never pass through this module: boto3's default chain reads AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY (or a profile, or an instance role), so no settings object, repr or log line can hold them.

Unchanged files are skipped by comparing size and ETag. For a single-part upload S3's ETag is the MD5 of the bytes;
for a multipart upload it is `md5(md5(part_1) + ... + md5(part_n)) + "-n"`, which this module recomputes with the
same part size it uploads with. An ETag made any other way (another part size, SSE-KMS) never matches, so such a file
is transferred again: the comparison can cost bandwidth, never correctness.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # boto3 is imported lazily: importing components.storage must stay cheap
    from boto3.s3.transfer import TransferConfig

MiB = 1024 * 1024

# Where each setting is read from, first match wins. The MLflow and AWS names are accepted so that one .env serves
# the stack, MLflow's own S3 client and this module.
ENDPOINT_ENV_VARS = ("SHAPCA_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")
REGION_ENV_VARS = ("SHAPCA_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION")
BUCKET_ENV_VAR = "SHAPCA_S3_BUCKET"
PREFIX_ENV_VAR = "SHAPCA_S3_PREFIX"


class S3StorageError(RuntimeError):
    """An S3 operation failed; the message names the s3:// URI, the operation and the store's error code."""


class S3Settings(BaseModel):
    """Where objects live. Deliberately has no credential fields (extra="forbid" rejects them)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint_url: str | None = None  # None: AWS itself; e.g. http://127.0.0.1:9000 for the MinIO in infra/
    region: str = "us-east-1"
    bucket: str | None = None  # needed by S3BlobStore and uri(); functions taking a full s3:// URI do not need it
    prefix: str = ""  # key prefix inside the bucket, without leading or trailing "/"
    # "auto" means path-style whenever endpoint_url is set: MinIO and moto serve buckets under the path, not as
    # virtual hosts (http://bucket.127.0.0.1:9000 does not resolve).
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    max_attempts: int = Field(default=5, ge=1)  # botocore "standard" retry mode: throttling, 5xx, connection errors
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    multipart_threshold_mib: int = Field(default=8, ge=5)  # S3 rejects parts under 5 MiB (except the last)
    multipart_chunksize_mib: int = Field(default=8, ge=5)
    # Create-only puts use `If-None-Match: *`. Stores that reject the header answer 501 NotImplemented, and the blob
    # store then falls back to head-then-put by itself; set False to skip the attempt.
    conditional_writes: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> S3Settings:
        """Settings from the environment (names in ENDPOINT_ENV_VARS, REGION_ENV_VARS, SHAPCA_S3_BUCKET/PREFIX)."""
        env = os.environ if environ is None else environ

        def first(names: tuple[str, ...]) -> str | None:
            return next((env[n] for n in names if env.get(n)), None)

        values: dict[str, Any] = {
            "endpoint_url": first(ENDPOINT_ENV_VARS),
            "region": first(REGION_ENV_VARS) or "us-east-1",
            "bucket": env.get(BUCKET_ENV_VAR) or None,
            "prefix": env.get(PREFIX_ENV_VAR, "").strip("/"),
        }
        values.update(overrides)
        return cls(**values)

    def require_bucket(self) -> str:
        if not self.bucket:
            raise S3StorageError(f"no S3 bucket configured: set {BUCKET_ENV_VAR} or pass S3Settings(bucket=...)")
        return self.bucket

    def uri(self, *parts: str) -> str:
        """`s3://<bucket>/<prefix>/<parts...>`: e.g. `settings.uri("mlflow")` as an experiment's artifact root."""
        keys = [p.strip("/") for p in (self.prefix, *parts) if p.strip("/")]
        return f"s3://{self.require_bucket()}/" + "/".join(keys)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/key` -> `("bucket", "some/key")`; the key may be empty (the whole bucket)."""
    if not uri.startswith("s3://"):
        raise ValueError(f"expected an s3://bucket/key URI, got {uri!r}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in S3 URI {uri!r}")
    return bucket, key


def s3_client(settings: S3Settings | None = None):
    """A boto3 S3 client for these settings; credentials come from boto3's default chain (the environment)."""
    import boto3
    from botocore.config import Config

    settings = settings or S3Settings.from_env()
    style = settings.addressing_style
    if style == "auto":
        style = "path" if settings.endpoint_url else "auto"
    config = Config(
        region_name=settings.region,
        retries={"mode": "standard", "max_attempts": settings.max_attempts},
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        s3={"addressing_style": style},
        # Newer botocore adds CRC checksums to every request by default; several S3-compatible stores reject them.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client("s3", endpoint_url=settings.endpoint_url, config=config)


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    inner = exc.__cause__ or exc.__context__
    if not response and inner is not None:  # boto3's transfer errors are raised while handling a ClientError
        return _error_code(inner)
    return str(response.get("Error", {}).get("Code", "")) or type(exc).__name__


def _is_not_found(exc: Exception) -> bool:
    return _error_code(exc) in {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


def _storage_error(action: str, uri: str, exc: Exception) -> S3StorageError:
    from botocore.exceptions import NoCredentialsError

    if any(isinstance(e, NoCredentialsError) for e in (exc, exc.__cause__, exc.__context__)):
        hint = " (no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment)"
    else:
        hint = ""
    return S3StorageError(f"S3 {action} failed for {uri}: {_error_code(exc)}: {exc}{hint}")


def _s3_call(action: str, uri: str, fn, *args: Any, **kwargs: Any) -> Any:
    """Run one boto3 call and turn any boto3/botocore failure into an S3StorageError naming the URI."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(*args, **kwargs)
    except (ClientError, BotoCoreError, Boto3Error) as exc:
        raise _storage_error(action, uri, exc) from exc


def ensure_bucket(settings: S3Settings | None = None, bucket: str | None = None) -> bool:
    """Create the bucket if it does not exist. Returns True when it was created."""
    from botocore.exceptions import ClientError

    settings = settings or S3Settings.from_env()
    bucket = bucket or settings.require_bucket()
    client = s3_client(settings)
    try:
        client.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        if not _is_not_found(exc):
            raise _storage_error("head_bucket", f"s3://{bucket}", exc) from exc
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if settings.region != "us-east-1":  # us-east-1 is the one region that rejects an explicit LocationConstraint
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.region}
    try:
        client.create_bucket(**kwargs)
    except ClientError as exc:
        if _error_code(exc) in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
            return False  # created concurrently by someone else: the outcome the caller wanted
        raise _storage_error("create_bucket", f"s3://{bucket}", exc) from exc
    return True


def transfer_config(settings: S3Settings) -> TransferConfig:
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(
        multipart_threshold=settings.multipart_threshold_mib * MiB,
        multipart_chunksize=settings.multipart_chunksize_mib * MiB,
    )


def expected_etag(path: Path, settings: S3Settings) -> str:
    """The ETag S3 gives `path` when uploaded with `transfer_config(settings)` (unquoted hex, "-n" when multipart)."""
    size = path.stat().st_size
    chunk = settings.multipart_chunksize_mib * MiB
    part_digests: list[bytes] = []
    with path.open("rb") as f:
        if size < settings.multipart_threshold_mib * MiB:
            whole = hashlib.md5(usedforsecurity=False)
            for block in iter(lambda: f.read(MiB), b""):
                whole.update(block)
            return whole.hexdigest()
        while part := f.read(chunk):
            part_digests.append(hashlib.md5(part, usedforsecurity=False).digest())
    return f"{hashlib.md5(b''.join(part_digests), usedforsecurity=False).hexdigest()}-{len(part_digests)}"


def _unchanged(path: Path, size: int, etag: str, settings: S3Settings) -> bool:
    if not path.is_file() or path.stat().st_size != size:
        return False
    return expected_etag(path, settings) == etag.strip('"')


def _list_objects(client, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    """Every object under `prefix`, following continuation tokens."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            yield from page.get("Contents", [])
    except (ClientError, BotoCoreError) as exc:
        raise _storage_error("list_objects_v2", f"s3://{bucket}/{prefix}", exc) from exc


def _dir_prefix(key: str) -> str:
    """A key prefix that matches the folder `key` and nothing beside it ("runs/1" must not match "runs/10")."""
    key = key.strip("/")
    return f"{key}/" if key else ""


@dataclass
class TransferReport:
    """What a directory sync did, file by file (paths relative to the directory)."""

    transferred: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already identical at the destination
    bytes_transferred: int = 0


def _progress_bar(total_bytes: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not enabled)


def upload_file(local_path: str | Path, s3_uri: str, settings: S3Settings | None = None) -> None:
    settings = settings or S3Settings.from_env()
    local_path = Path(local_path)
    if not local_path.is_file():
        raise FileNotFoundError(f"cannot upload {local_path}: not a file")
    bucket, key = parse_s3_uri(s3_uri)
    if not key or key.endswith("/"):
        raise ValueError(f"upload target {s3_uri!r} must name an object key, not a folder")
    client = s3_client(settings)
    _s3_call("upload", s3_uri, client.upload_file, str(local_path), bucket, key, Config=transfer_config(settings))


def download_file(s3_uri: str, local_path: str | Path, settings: S3Settings | None = None) -> Path:
    """Download one object; boto3 writes a temporary file and renames it, so a failure leaves no partial file."""
    settings = settings or S3Settings.from_env()
    bucket, key = parse_s3_uri(s3_uri)
    local_path = Path(local_path)
    local_path.parent.mkdir(parents=True, exist_ok=True)
    client = s3_client(settings)
    _s3_call("download", s3_uri, client.download_file, bucket, key, str(local_path), Config=transfer_config(settings))
    return local_path


def exists(s3_uri: str, settings: S3Settings | None = None) -> bool:
    """True when the object exists; a missing object or bucket is False, any other failure raises."""
    bucket, key = parse_s3_uri(s3_uri)
    return _head_exists(s3_client(settings or S3Settings.from_env()), bucket, key)


def _head_exists(client, bucket: str, key: str) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        if _is_not_found(exc):
            return False
        raise _storage_error("head_object", f"s3://{bucket}/{key}", exc) from exc
    except BotoCoreError as exc:
        raise _storage_error("head_object", f"s3://{bucket}/{key}", exc) from exc


def upload_dir(
    local_dir: str | Path, s3_uri: str, settings: S3Settings | None = None, *, progress: bool = True
) -> TransferReport:
    """Copy every file under `local_dir` to `s3_uri/<relative path>`, skipping files already there unchanged.

    Nothing at the destination is deleted: this is a copy, not a mirror.
    """
    settings = settings or S3Settings.from_env()
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise NotADirectoryError(f"cannot upload {local_dir}: not a directory")
    bucket, key = parse_s3_uri(s3_uri)
    prefix = _dir_prefix(key)
    client = s3_client(settings)
    remote = {obj["Key"]: (obj["Size"], obj["ETag"]) for obj in _list_objects(client, bucket, prefix)}

    report = TransferReport()
    todo: list[tuple[Path, str]] = []
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(local_dir).as_posix()
        target = prefix + rel
        if target in remote and _unchanged(path, *remote[target], settings):
            report.skipped.append(rel)
        else:
            todo.append((path, rel))

    config = transfer_config(settings)
    total = sum(p.stat().st_size for p, _ in todo)
    with _progress_bar(total, f"upload {s3_uri}", progress) as bar:
        for path, rel in todo:
            uri = f"s3://{bucket}/{prefix}{rel}"
            _s3_call("upload", uri, client.upload_file, str(path), bucket, prefix + rel, Config=config,
                     Callback=bar.update)
            report.transferred.append(rel)
            report.bytes_transferred += path.stat().st_size
    return report


def download_dir(
    s3_uri: str, local_dir: str | Path, settings: S3Settings | None = None, *, progress: bool = True
) -> TransferReport:
    """Copy every object under `s3_uri/` into `local_dir`, skipping local files that are already identical.

    An empty prefix is an error, not an empty result: a mistyped URI must not look like a successful sync.
    """
    settings = settings or S3Settings.from_env()
    local_dir = Path(local_dir)
    bucket, key = parse_s3_uri(s3_uri)
    prefix = _dir_prefix(key)
    client = s3_client(settings)
    objects = [o for o in _list_objects(client, bucket, prefix) if not o["Key"].endswith("/")]  # skip folder markers
    if not objects:
        raise S3StorageError(f"nothing to download: no objects under s3://{bucket}/{prefix}")

    root = local_dir.resolve()
    report = TransferReport()
    todo: list[tuple[dict[str, Any], str, Path]] = []
    for obj in objects:
        rel = obj["Key"][len(prefix) :]
        dest = (local_dir / PurePosixPath(rel)).resolve()
        if not dest.is_relative_to(root):  # a key such as "a/../../etc/x" must not write outside local_dir
            raise S3StorageError(f"refusing to download s3://{bucket}/{obj['Key']}: it resolves outside {local_dir}")
        if _unchanged(dest, obj["Size"], obj["ETag"], settings):
            report.skipped.append(rel)
        else:
            todo.append((obj, rel, dest))

    config = transfer_config(settings)
    with _progress_bar(sum(o["Size"] for o, _, _ in todo), f"download {s3_uri}", progress) as bar:
        for obj, rel, dest in todo:
            dest.parent.mkdir(parents=True, exist_ok=True)
            _s3_call("download", f"s3://{bucket}/{obj['Key']}", client.download_file, bucket, obj["Key"], str(dest),
                     Config=config, Callback=bar.update)
            report.transferred.append(rel)
            report.bytes_transferred += obj["Size"]
    return report


class S3BlobStore:
    """Write-once bytes by key under `s3://<bucket>/<prefix>/`: a cache whose entries are never rewritten.

    `put` is create-only. With `conditional_writes` it sends `If-None-Match: *`, so S3 itself refuses to overwrite an
    existing key and two writers racing on one key cannot both win. Without it (or when the store answers 501) it
    falls back to head-then-put, which has a small race window: acceptable for a cache whose values for one key are
    identical (content-addressed), not for anything else.
    """

    def __init__(self, settings: S3Settings | None = None):
        self.settings = settings or S3Settings.from_env()
        self.bucket = self.settings.require_bucket()
        self._client = s3_client(self.settings)

    def _key(self, key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid blob key {key!r}: expected a relative path such as 'blip2/abc123.json'")
        return f"{self.settings.prefix.strip('/')}/{key}" if self.settings.prefix.strip("/") else key

    def _uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def get(self, key: str) -> bytes | None:
        """The stored bytes, or None when the key has never been written."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            return response["Body"].read()
        except ClientError as exc:
            if _error_code(exc) in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise _storage_error("get_object", self._uri(key), exc) from exc
        except BotoCoreError as exc:
            raise _storage_error("get_object", self._uri(key), exc) from exc

    def put(self, key: str, data: bytes) -> bool:
        """Store `data` under `key` unless the key exists. Returns True when this call wrote it."""
        from botocore.exceptions import BotoCoreError, ClientError

        full_key = self._key(key)
        if self.settings.conditional_writes:
            try:
                self._client.put_object(Bucket=self.bucket, Key=full_key, Body=data, IfNoneMatch="*")
                return True
            except ClientError as exc:
                code = _error_code(exc)
                if code in {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}:
                    return False
                if code not in {"NotImplemented", "501"}:
                    raise _storage_error("put_object", self._uri(key), exc) from exc
                # The store does not support conditional writes: fall through to head-then-put.
            except BotoCoreError as exc:
                raise _storage_error("put_object", self._uri(key), exc) from exc
        if self.exists(key):
            return False
        _s3_call("put_object", self._uri(key), self._client.put_object, Bucket=self.bucket, Key=full_key, Body=data)
        return True

    def exists(self, key: str) -> bool:
        return _head_exists(self._client, self.bucket, self._key(key))

    def list(self, prefix: str = "") -> list[str]:
        """Keys (relative to the store's prefix) that start with `prefix`, sorted."""
        root = f"{self.settings.prefix.strip('/')}/" if self.settings.prefix.strip("/") else ""
        objects = _list_objects(self._client, self.bucket, root + prefix)
        return sorted(obj["Key"][len(root) :] for obj in objects)
