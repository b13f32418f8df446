"""Named objects under one location, an `s3://bucket/prefix` URL or a local directory: what shared storage needs to
publish a set of files that a process on another host reads back (the epoch checkpoints of components/training).

Each object is written whole or not at all: an S3 PUT is atomic (a reader gets the old object, the new one, or none,
never a part), and on a directory a file is written beside its final name and renamed over it (`os.replace`). Making
a *set* of objects appear at once is the caller's job (write them, then one small object that names them).

boto3 takes the endpoint (AWS_ENDPOINT_URL, for MinIO or moto), the region and the credentials from the environment,
like every other S3 client of the stack (dvc-s3, s3fs, the context cache).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Protocol

Names = list[str]  # object names; spelled once here because the stores' own `list` method shadows the builtin in them


class ObjectStore(Protocol):
    url: str

    def put_file(self, name: str, path: Path) -> None: ...

    def put_bytes(self, name: str, data: bytes) -> None: ...

    def get_file(self, name: str, path: Path) -> bool:
        """Download `name` to `path`; False when there is no such object."""
        ...

    def get_bytes(self, name: str) -> bytes | None: ...

    def list(self, prefix: str = "") -> Names:
        """The names under `prefix` (relative to the store), sorted."""
        ...

    def delete(self, names: Names) -> None: ...


def _check_name(name: str) -> str:
    if not name or name.startswith("/") or ".." in name.split("/"):
        raise ValueError(f"object name {name!r}: expected a relative path without '..'")
    return name


class DirectoryStore:
    """Objects as files under a directory (a local disk, or a file system every host mounts)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.url = str(self.root)

    def _path(self, name: str) -> Path:
        return self.root / _check_name(name)

    def _write(self, name: str, write) -> None:
        final = self._path(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(final.name + ".tmp")
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)

    def put_file(self, name: str, path: Path) -> None:
        self._write(name, lambda tmp: shutil.copyfile(path, tmp))

    def put_bytes(self, name: str, data: bytes) -> None:
        self._write(name, lambda tmp: tmp.write_bytes(data))

    def get_file(self, name: str, path: Path) -> bool:
        source = self._path(name)
        if not source.is_file():
            return False
        shutil.copyfile(source, path)
        return True

    def get_bytes(self, name: str) -> bytes | None:
        source = self._path(name)
        return source.read_bytes() if source.is_file() else None

    def list(self, prefix: str = "") -> Names:
        if not self.root.is_dir():
            return []
        names = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(n for n in names if n.startswith(prefix) and not n.endswith(".tmp"))

    def delete(self, names: Names) -> None:
        for name in names:
            self._path(name).unlink(missing_ok=True)


S3_RETRIES = {"mode": "standard", "max_attempts": 10}  # exponential backoff, at most 20 s a wait: about a minute


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix/` -> ("bucket", "some/prefix"); a clear error for anything else."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not url.startswith("s3://") or not bucket:
        raise ValueError(f"{url!r}: expected s3://<bucket>[/<prefix>]")
    return bucket, prefix.strip("/")


class S3Store:
    """Objects under `s3://bucket/prefix`."""

    def __init__(self, url: str):
        import boto3
        from botocore.config import Config

        self.bucket, prefix = parse_s3_url(url)
        self.url = url.rstrip("/")
        self.prefix = prefix + "/" if prefix else ""
        # botocore's standard retries, more of them: a blip of S3 (throttling, a restart) costs seconds, not the write.
        self.client = boto3.session.Session().client("s3", config=Config(retries=S3_RETRIES))

    def _key(self, name: str) -> str:
        return self.prefix + _check_name(name)

    def put_file(self, name: str, path: Path) -> None:
        self.client.upload_file(str(path), self.bucket, self._key(name))

    def put_bytes(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data)

    def _missing(self, exc: Exception) -> bool:
        error = getattr(exc, "response", {}).get("Error", {})
        return error.get("Code") in ("404", "NoSuchKey", "NotFound")

    def get_file(self, name: str, path: Path) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.download_file(self.bucket, self._key(name), str(path))
        except ClientError as exc:
            if self._missing(exc):
                return False
            raise
        return True

    def get_bytes(self, name: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(name))["Body"].read()
        except ClientError as exc:
            if self._missing(exc):
                return None
            raise

    def list(self, prefix: str = "") -> Names:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
        return sorted(item["Key"][len(self.prefix) :] for page in pages for item in page.get("Contents", []))

    def delete(self, names: Names) -> None:
        """Delete these objects (missing ones count as deleted); raises naming every object that is still there.

        DeleteObjects answers 200 even when it deleted nothing: the refusals are per key, in the body. A key it
        refused is tried once more alone (DeleteObject), because S3-compatible stores differ on the batch call: moto
        authorizes it against the bucket rather than each key, so a policy that allows s3:DeleteObject on a prefix
        gets AccessDenied for every key of the batch and a plain DELETE of each."""
        from botocore.exceptions import ClientError

        refused: dict[str, str] = {}
        for start in range(0, len(names), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": self._key(n)} for n in names[start : start + 1000]]
            response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            for error in response.get("Errors", []):
                try:
                    self.client.delete_object(Bucket=self.bucket, Key=error["Key"])
                except ClientError as exc:
                    refused[error["Key"]] = exc.response.get("Error", {}).get("Code") or str(exc)
        if refused:
            listed = ", ".join(f"s3://{self.bucket}/{key} ({code})" for key, code in sorted(refused.items())[:5])
            more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
            raise OSError(f"could not delete {len(refused)} object(s): {listed}{more}")


def open_store(location: str | Path) -> ObjectStore:
    """The store at `location`: an `s3://` URL, or a local directory (created on the first write)."""
    if str(location).startswith("s3://"):
        return S3Store(str(location))
    return DirectoryStore(location)
