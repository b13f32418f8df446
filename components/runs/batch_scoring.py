"""Batch scoring of a JSONL input with a registered Shap-CA model, one shard at a time, resumable: the library
behind the `score-tweets` flow (flows/score_tweets.py), which runs the shards in parallel on a Dask cluster.

    resolve_model      models:/shapca-<dataset>@champion -> version 3 of it, its run (pinned: a promotion while
                       the job runs does not mix two models in one output)
    plan_job           the input's sha256 and shards (components/data/jsonl_shards.py), and where the output goes:
                       <output>/<model>-v<version>/<sha256[:16]>-<lines per shard>/part-00000.jsonl, ...
    score_shard        one shard: skipped when its part exists, else scored in chunks and written as one object
    write_manifest     manifest.json beside the parts, naming the model, its run, the input's digest and the counts

A part is written whole or not at all (a local file is renamed into place, an S3 object is one PUT), and its name
holds the input's digest, the model version and the shard index: a rerun skips every shard whose part exists, a job
killed half-way resumes from the parts it left, and another model or input never reuses them. The manifest is written
last, so its presence says the output is complete.

Output rows, one per input line and in line order across parts: `line`, `id` (the input's, or null), the model's
prediction (its task's fields, e.g. `entities`), `truncated` and `error`. A bad line (not JSON, no `text`, ...) or a
row the model refuses gets its error, naming the line, and never fails the job.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from components.common.object_store import open_store
from components.data.jsonl_shards import InputPlan, InputRow, Shard, plan_shards, read_shard
from components.serving.limits import ServingLimits

OutputFormat = Literal["jsonl", "parquet"]
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
CHUNK_ROWS = 256  # rows per predict call: within the pyfunc's per-request row limit, whatever that limit becomes


@dataclass(frozen=True)
class ScoringModel:
    name: str
    version: str
    run_id: str | None
    requested: str  # what the caller asked for: a version number or an alias
    tracking_uri: str

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


@dataclass(frozen=True)
class ScoringJob:
    input: InputPlan
    model: ScoringModel
    output_url: str  # the location every part and the manifest live under
    output_format: OutputFormat

    def part_name(self, shard: Shard) -> str:
        return f"part-{shard.index:05d}.{self.output_format}"


@dataclass(frozen=True)
class ShardResult:
    index: int
    part: str
    first_line: int
    rows: int
    errors: int
    truncated: int
    reused: bool  # the part was already there (a rerun, or a resumed job): nothing was scored
    seconds: float
    pid: int  # the process that scored or counted it (a Dask worker's)


def resolve_model(model_name: str, version: str = "champion", tracking_uri: str | None = None) -> ScoringModel:
    """The registered version `version` (a number or an alias) of `model_name`, with the run that produced it."""
    from mlflow import MlflowClient

    from components.tracking.mlflow_setup import resolve_tracking_uri

    uri = tracking_uri or resolve_tracking_uri()
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    if str(version).isdigit():
        found = client.get_model_version(model_name, str(version))
    else:
        found = client.get_model_version_by_alias(model_name, version)
    return ScoringModel(
        name=model_name, version=str(found.version), run_id=found.run_id, requested=str(version), tracking_uri=uri
    )


def plan_job(
    input_url: str, output_url: str, model: ScoringModel, lines_per_shard: int, output_format: OutputFormat = "jsonl"
) -> ScoringJob:
    if output_format not in ("jsonl", "parquet"):
        raise ValueError(f"output_format must be 'jsonl' or 'parquet', got {output_format!r}")
    plan = plan_shards(input_url, lines_per_shard)
    key = f"{model.name}-v{model.version}/{plan.sha256[:16]}-{lines_per_shard}"
    return ScoringJob(plan, model, f"{output_url.rstrip('/')}/{key}", output_format)


_LOADED: dict[str, Any] = {}  # model URI -> loaded pyfunc: one load per process (a Dask worker), not per shard


def loaded_model(model: ScoringModel) -> Any:
    if model.uri not in _LOADED:
        import mlflow

        mlflow.set_tracking_uri(model.tracking_uri)
        mlflow.set_registry_uri(model.tracking_uri)
        _LOADED[model.uri] = mlflow.pyfunc.load_model(model.uri)
    return _LOADED[model.uri]


def max_line_bytes() -> int:
    """The longest line worth parsing: a text and a context at the field limit, JSON-escaped, plus some fields."""
    return 2 * 4 * ServingLimits.resolve().max_field_chars + 65_536


def _for_line(row: InputRow, message: str) -> str:
    """The pyfunc's `row <i>: ...` (a position in one predict call) as `line <n>: ...`."""
    _, sep, rest = message.partition(": ")
    return f"line {row.line}: {rest}" if sep and message.startswith("row ") else f"line {row.line}: {message}"


def _predict(model: Any, rows: list[InputRow]) -> list[dict[str, Any]]:
    """Predictions for rows that parsed. If the model refuses the chunk as a whole (an input it cannot coerce to its
    signature), each row is predicted alone, so only the bad one gets the error."""
    import pandas as pd

    try:
        return list(model.predict(pd.DataFrame([row.fields for row in rows])))
    except Exception as error:
        if len(rows) == 1:
            return [{"truncated": None, "error": f"the model refused the row: {error}"}]
        return [out for row in rows for out in _predict(model, [row])]


def score_rows(model: Any, rows: list[InputRow], chunk_rows: int = CHUNK_ROWS) -> list[dict[str, Any]]:
    """One output row per input row, in order."""
    out: list[dict[str, Any]] = []
    for start in range(0, len(rows), chunk_rows):
        chunk = rows[start : start + chunk_rows]
        good = [row for row in chunk if row.error is None]
        predictions = iter(_predict(model, good) if good else [])
        for row in chunk:
            if row.error is not None:
                out.append({"line": row.line, "id": row.id, "truncated": None, "error": row.error})
                continue
            prediction = dict(next(predictions))
            if prediction.get("error"):
                prediction["error"] = _for_line(row, str(prediction["error"]))
            out.append({"line": row.line, "id": row.id, **prediction})
    return out


def encode_rows(rows: list[dict[str, Any]], output_format: OutputFormat) -> bytes:
    if output_format == "jsonl":
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
    import pandas as pd

    buffer = io.BytesIO()
    frame = pd.DataFrame(rows)
    frame["id"] = frame["id"].map(lambda v: None if v is None else str(v))  # ids may mix strings and numbers
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def decode_rows(data: bytes, output_format: OutputFormat) -> list[dict[str, Any]]:
    if output_format == "jsonl":
        return [json.loads(line) for line in data.decode("utf-8").splitlines()]
    import pandas as pd

    return pd.read_parquet(io.BytesIO(data)).to_dict(orient="records")


def _result(job: ScoringJob, shard: Shard, rows: list[dict[str, Any]], reused: bool, t0: float) -> ShardResult:
    return ShardResult(
        index=shard.index,
        part=job.part_name(shard),
        first_line=shard.first_line,
        rows=len(rows),
        errors=sum(row.get("error") is not None for row in rows),
        truncated=sum(row.get("truncated") is not None for row in rows),
        reused=reused,
        seconds=round(time.monotonic() - t0, 3),
        pid=os.getpid(),
    )


def score_shard(job: ScoringJob, shard: Shard, chunk_rows: int = CHUNK_ROWS) -> ShardResult:
    """Score one shard and write its part, or count the part a previous attempt wrote."""
    t0 = time.monotonic()
    store = open_store(job.output_url)
    name = job.part_name(shard)
    existing = store.get_bytes(name)
    if existing is not None:
        rows = decode_rows(existing, job.output_format)
        if len(rows) == shard.lines:
            return _result(job, shard, rows, True, t0)
    rows = score_rows(loaded_model(job.model), read_shard(job.input.url, shard, max_line_bytes()), chunk_rows)
    store.put_bytes(name, encode_rows(rows, job.output_format))
    return _result(job, shard, rows, False, t0)


def manifest(job: ScoringJob, results: list[ShardResult]) -> dict[str, Any]:
    results = sorted(results, key=lambda r: r.index)
    if [r.index for r in results] != [s.index for s in job.input.shards]:
        raise ValueError(f"results for shards {[r.index for r in results]}, expected all {len(job.input.shards)}")
    rows = sum(r.rows for r in results)
    errors = sum(r.errors for r in results)
    return {
        "format": MANIFEST_FORMAT,
        "model": {"name": job.model.name, "version": job.model.version, "requested": job.model.requested}
        | {"uri": job.model.uri, "run_id": job.model.run_id},
        "input": {"url": job.input.url, "sha256": job.input.sha256, "bytes": job.input.bytes, "lines": job.input.lines},
        "output": {"url": job.output_url, "format": job.output_format, "parts": [asdict(r) for r in results]},
        "counts": {
            "rows": rows,
            "predicted": rows - errors,
            "errors": errors,
            "truncated": sum(r.truncated for r in results),
            "shards": len(results),
            "shards_reused": sum(r.reused for r in results),
        },
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_manifest(job: ScoringJob, results: list[ShardResult]) -> dict[str, Any]:
    """The manifest, written beside the parts once every shard is done; returns it."""
    content = manifest(job, results)
    if content["counts"]["rows"] != job.input.lines:
        raise ValueError(f"the parts hold {content['counts']['rows']} rows for {job.input.lines} input lines")
    open_store(job.output_url).put_bytes(MANIFEST, json.dumps(content, indent=2).encode("utf-8"))
    return content


def read_predictions(output_url: str) -> list[dict[str, Any]]:
    """Every output row of a finished job (its manifest's parts, in order): what a consumer reads back."""
    store = open_store(output_url)
    raw = store.get_bytes(MANIFEST)
    if raw is None:
        raise FileNotFoundError(f"{output_url}/{MANIFEST}: no manifest; the job has not finished")
    content = json.loads(raw)
    output_format = content["output"]["format"]
    rows: list[dict[str, Any]] = []
    for part in content["output"]["parts"]:
        data = store.get_bytes(part["part"])
        if data is None:
            raise FileNotFoundError(f"{output_url}/{part['part']}: named by the manifest but missing")
        rows += decode_rows(data, output_format)
    return rows
