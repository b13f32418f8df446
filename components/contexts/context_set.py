"""Context-set files: the contexts one training run uses, as `shapca contexts` publishes them.

`<cache_dir>/sets/<dataset>-<generator>.jsonl`, one `{"image_id": ..., "context": ...}` object a line, sorted by image
id, next to `<dataset>-<generator>.manifest.json`:
    {"dataset", "generator", "generator_id", "prompt", "params", "content_hash", "num_contexts",
     "coverage": {split: {"tweets", "with_context", "coverage", "images", "images_with_context"}},
     "run": {"hits", "misses", "reused", "failures", "seconds"}, "failures": [{"image_id", "reason"}, ...]}
`content_hash` is `ContextSet.content_hash()` of the file's contexts: the value training logs to MLflow, and what
`read_context_set` checks the file against. Both files are written atomically (temporary file + rename). Point
`DataConfig.context_file` at the .jsonl file to train on it.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from components.data.records import ContextSet, DataFormatError, ReadProblem


def set_paths(cache_dir: Path, dataset: str, generator: str) -> tuple[Path, Path]:
    stem = f"{dataset}-{generator}".replace("/", "-")
    sets = Path(cache_dir) / "sets"
    return sets / f"{stem}.jsonl", sets / f"{stem}.manifest.json"


def manifest_path_for(path: Path) -> Path:
    path = Path(path)
    return path.with_name(path.name.removesuffix(".jsonl") + ".manifest.json")


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def split_coverage(contexts: ContextSet, split_image_ids: dict[str, list[str]]) -> dict[str, dict]:
    """Per split: how many tweets (and distinct images) have a context."""
    coverage = {}
    for split, image_ids in split_image_ids.items():
        distinct = set(image_ids)
        with_context = sum(i in contexts.contexts for i in image_ids)
        coverage[split] = {
            "tweets": len(image_ids),
            "with_context": with_context,
            "coverage": round(with_context / len(image_ids), 6) if image_ids else 0.0,
            "images": len(distinct),
            "images_with_context": sum(i in contexts.contexts for i in distinct),
        }
    return coverage


@dataclass(frozen=True)
class PublishedSet:
    path: Path
    manifest_path: Path
    manifest: dict

    @property
    def content_hash(self) -> str:
        return self.manifest["content_hash"]


def write_context_set(path: Path, contexts: ContextSet, manifest: dict) -> PublishedSet:
    """Write the set and its manifest (the content hash and the count are filled in here, from the contexts)."""
    path = Path(path)
    lines = [
        json.dumps({"image_id": image_id, "context": contexts.contexts[image_id]}, ensure_ascii=False)
        for image_id in sorted(contexts.contexts)
    ]
    manifest = {
        **manifest,
        "generator": contexts.generator,
        "content_hash": contexts.content_hash(),
        "num_contexts": len(contexts.contexts),
    }
    manifest_path = manifest_path_for(path)
    # Set first, manifest second: a manifest always describes a complete set file.
    _atomic_write_text(path, "".join(line + "\n" for line in lines))
    _atomic_write_text(manifest_path, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return PublishedSet(path, manifest_path, manifest)


def read_manifest(path: Path) -> dict | None:
    manifest_path = manifest_path_for(path)
    if not manifest_path.is_file():
        return None
    try:
        return json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataFormatError([ReadProblem(manifest_path, exc.lineno, f"not valid JSON: {exc.msg}")]) from None


def read_context_set(path: str | Path, generator: str | None = None) -> ContextSet:
    """Read a context-set file; when its manifest is there, check the contents still hash to the published value."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"context set {path}: no such file (write one with `shapca contexts`)")
    manifest = read_manifest(path)
    contexts: dict[str, str] = {}
    problems: list[ReadProblem] = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(ReadProblem(path, number, f"not valid JSON ({exc.msg}): expected an object"))
                continue
            if (
                not isinstance(row, dict)
                or not isinstance(row.get("image_id"), str)
                or not isinstance(row.get("context"), str)
            ):
                problems.append(ReadProblem(path, number, 'expected {"image_id": <string>, "context": <string>}'))
                continue
            if row["image_id"] in contexts:
                problems.append(ReadProblem(path, number, f"image id {row['image_id']!r} appears twice"))
                continue
            contexts[row["image_id"]] = row["context"]
    if problems:
        raise DataFormatError(problems)
    name = generator or (manifest or {}).get("generator") or path.stem
    result = ContextSet(generator=name, contexts=contexts)
    if manifest is not None and manifest.get("content_hash") != result.content_hash():
        raise DataFormatError(
            [
                ReadProblem(
                    manifest_path_for(path),
                    1,
                    f"content_hash {manifest.get('content_hash')} does not match the contexts in {path} "
                    f"({result.content_hash()}): the set was changed after it was published; rerun `shapca contexts`",
                )
            ]
        )
    return result
