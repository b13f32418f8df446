"""A JSONL input (a local file or an `s3://bucket/key` object) split into shards of consecutive lines, for scoring
in parallel.

One pass over the bytes (streamed, never held whole) gives the input's sha256 digest, its line count and, for each
shard, the byte range of its lines; a worker then reads only its own range (a seek, or an S3 ranged GET). Shards are
fixed by the bytes and the shard size alone, so a rerun on the same input plans the same shards.

Reading a shard never fails on a bad line: every line becomes one row, and a line that cannot be scored (over the size
limit, not UTF-8, not JSON, not an object, no `text`) carries an error naming its line number instead of its fields.
Line numbers are 1-based, as an editor shows them; a blank line is a row too (nothing is dropped silently).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

READ_CHUNK_BYTES = 1 << 20
EXAMPLE_LINE = '{"id": "1", "text": "Obama visits Paris"}'


@dataclass(frozen=True)
class Shard:
    index: int
    first_line: int  # 1-based number of its first line
    lines: int
    start: int  # byte offsets of its lines in the input: [start, end)
    end: int


@dataclass(frozen=True)
class InputPlan:
    url: str
    sha256: str
    bytes: int
    lines: int
    shards: tuple[Shard, ...]


@dataclass(frozen=True)
class InputRow:
    line: int
    id: Any  # the line's `id` (a JSON string or number) or None when it has none
    fields: dict[str, Any] | None  # what the model reads (the object without `id`); None when the line is bad
    error: str | None  # "line <n>: what is wrong" when the line is bad


class InputFile:
    """The bytes of a local file or an S3 object: streamed whole, or one byte range."""

    def __init__(self, url: str):
        self.url = url
        if url.startswith("s3://"):
            import boto3
            from botocore.config import Config

            from components.common.object_store import S3_RETRIES, parse_s3_url

            self.bucket, self.key = parse_s3_url(url)
            if not self.key:
                raise ValueError(f"{url!r}: expected s3://<bucket>/<key> of a JSONL object")
            self.client = boto3.session.Session().client("s3", config=Config(retries=S3_RETRIES))
        elif not Path(url).is_file():
            raise FileNotFoundError(f"{url}: no such input file (expected a JSONL file or an s3:// URL)")

    def chunks(self) -> Iterator[bytes]:
        if self.url.startswith("s3://"):
            body = self.client.get_object(Bucket=self.bucket, Key=self.key)["Body"]
            yield from body.iter_chunks(READ_CHUNK_BYTES)
            return
        with open(self.url, "rb") as fh:
            while chunk := fh.read(READ_CHUNK_BYTES):
                yield chunk

    def read(self, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        if self.url.startswith("s3://"):
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={start}-{end - 1}")
            return answer["Body"].read()
        with open(self.url, "rb") as fh:
            fh.seek(start)
            return fh.read(end - start)


def plan_shards(url: str, lines_per_shard: int) -> InputPlan:
    """The input's digest and its shards of `lines_per_shard` lines (the last may be shorter), in one streamed pass."""
    if lines_per_shard < 1:
        raise ValueError(f"lines_per_shard must be at least 1, got {lines_per_shard}")
    digest = hashlib.sha256()
    line_starts = [0]  # byte offset where each shard's first line starts, then the end
    lines = 0
    size = 0
    last_byte = b"\n"
    for chunk in InputFile(url).chunks():
        digest.update(chunk)
        position = chunk.find(b"\n")
        while position != -1:
            lines += 1
            if lines % lines_per_shard == 0:
                line_starts.append(size + position + 1)
            position = chunk.find(b"\n", position + 1)
        size += len(chunk)
        last_byte = chunk[-1:]
    if last_byte != b"\n":  # a last line without its newline is a line too
        lines += 1
        if lines % lines_per_shard == 0:
            line_starts.append(size)
    if line_starts[-1] != size:
        line_starts.append(size)
    shards = tuple(
        Shard(
            index=i,
            first_line=i * lines_per_shard + 1,
            lines=min(lines_per_shard, lines - i * lines_per_shard),
            start=start,
            end=end,
        )
        for i, (start, end) in enumerate(zip(line_starts, line_starts[1:], strict=False))
    )
    return InputPlan(url=url, sha256=digest.hexdigest(), bytes=size, lines=lines, shards=shards)


def parse_line(number: int, raw: bytes, max_line_bytes: int) -> InputRow:
    """One line as a row: its id and fields, or the error that names it."""

    def bad(message: str, row_id: Any = None) -> InputRow:
        return InputRow(line=number, id=row_id, fields=None, error=f"line {number}: {message}")

    if len(raw) > max_line_bytes:
        return bad(f"line is {len(raw)} bytes, over the limit of {max_line_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return bad(f"not valid UTF-8 (byte 0x{raw[error.start]:02x} at column {error.start + 1})")
    if not text.strip():
        return bad(f"empty line; expected a JSON object such as {EXAMPLE_LINE}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return bad(f"not valid JSON ({error.msg} at column {error.colno})")
    if not isinstance(value, dict):
        return bad(f"expected a JSON object, got {type(value).__name__}")
    row_id = value.get("id")
    if row_id is not None and (isinstance(row_id, bool) or not isinstance(row_id, (str, int, float))):
        return bad(f"id must be a string or a number, got {type(row_id).__name__}")
    if "text" not in value:
        return bad(f"no 'text' field (it has {sorted(value)}); expected e.g. {EXAMPLE_LINE}", row_id)
    fields = {k: v for k, v in value.items() if k != "id"}
    return InputRow(line=number, id=row_id, fields=fields, error=None)


def read_shard(url: str, shard: Shard, max_line_bytes: int) -> list[InputRow]:
    """The shard's lines as rows, one per line, in order."""
    data = InputFile(url).read(shard.start, shard.end)
    raw_lines = data.split(b"\n")
    if data.endswith(b"\n"):
        raw_lines.pop()  # the split's empty tail after the last newline is no line
    if len(raw_lines) != shard.lines:
        raise ValueError(
            f"{url}: shard {shard.index} has {len(raw_lines)} lines where the plan counted {shard.lines}; "
            "the input changed while it was being scored"
        )
    return [
        parse_line(shard.first_line + i, raw.removesuffix(b"\r"), max_line_bytes) for i, raw in enumerate(raw_lines)
    ]
