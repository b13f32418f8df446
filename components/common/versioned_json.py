"""JSON files that say what wrote them: `{"format": ..., "format_version": ..., ...}`, refused on read when either
differs (the model's config.json, the processor's processor.json)."""

from __future__ import annotations

import json
from pathlib import Path


def write_versioned_json(path: Path, fmt: str, version: int, body: dict) -> None:
    payload = {"format": fmt, "format_version": version, **body}
    Path(path).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def read_versioned_json(path: Path, fmt: str, version: int, writer: str, older: tuple[int, ...] = ()) -> dict:
    """The file's object, after checking it is `fmt` at `version` (or one of the `older` versions the caller still
    reads); `writer` names what writes such files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; not a directory written by {writer}")
    meta = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(meta, dict) or meta.get("format") != fmt or meta.get("format_version") not in (version, *older):
        got = (meta.get("format"), meta.get("format_version")) if isinstance(meta, dict) else (None, None)
        raise ValueError(f"{path}: expected format {fmt!r} version {version}, got {got[0]!r} version {got[1]!r}")
    return meta
