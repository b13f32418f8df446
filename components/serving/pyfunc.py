"""Shap-CA as an MLflow pyfunc model: what consumers load from `models:/shapca-<dataset>@champion`.

Input: a DataFrame, one row per text.
  text     str (whitespace-tokenized) or list of str tokens           required
  context  str, a description of the row's image (e.g. from an LMM)  optional
  image    the image's bytes, or a file name inside the operator's    optional; used when the model has an image
           image directory (SHAPCA_IMAGE_DIR; none: names refused)    encoder
  spans    [start, end) token spans the task needs (its               e.g. `head`, `tail` for relation extraction
           `serving_spans`)
Output: one dict per row, in row order: the task's prediction as JSON (its `to_json`, components/tasks/<task>/task.py;
e.g. {"entities": [{"start", "end", "type", "text", "score"}]}), with `error` None or a message for that row
(a bad row never fails the batch), and `truncated` None or {"kept_words", "dropped_words"} when the text ran past the
model's token window. With the param ``output="json"``, each row's dict as one JSON string (for Spark's `from_json`).

Bounded work (see :class:`ServingLimits`, limits.py): any number of rows is predicted in chunks of ``batch_size``
rows, each read, decoded (its images too), predicted and let go before the next, so memory is bounded by one chunk
(plus the input and the outputs); a text or context of more than ``max_field_chars`` characters (or tokens), or an
image over ``max_image_bytes``, is a per-row error; a text past the window is cut before any per-word work
(components/model/processor.py). So one chunk costs at most ``batch_size x max_text_tokens`` word states, whatever it
holds. The scoring server (``mlflow models serve``, its Docker image) also refuses a request of more than ``max_rows``
rows as a whole (MlflowException INVALID_PARAMETER_VALUE: HTTP 400), so one request's time stays bounded too;
in-process callers (``mlflow.pyfunc.load_model(...).predict``, ``spark_udf(..., env_manager="local")``) are not held
to it: see :func:`_in_scoring_server`.
"""

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import pandas as pd
from mlflow.pyfunc.model import PythonModel, PythonModelContext

from components.data.records import Example, Span
from components.serving.inference import apply_inference, resolve_inference
from components.serving.limits import IMAGE_DIR_ENV, ServingLimits
from components.tasks import get_task

if TYPE_CHECKING:
    from PIL import Image

    from components.model.shapca import ShapCA

_log = logging.getLogger(__name__)
MODEL_ARTIFACT = "model"  # the artifact key under which `ShapCA.save_pretrained` output travels


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _tokens(value: Any, max_chars: int) -> list[str]:
    """The row's words. Strict: a string, or a list/array of strings; anything else (a dict, a number) is refused
    rather than iterated (a dict would be read as its keys)."""
    import numpy as np

    if _is_missing(value):
        raise ValueError("text is missing")
    if isinstance(value, str):
        if len(value) > max_chars:
            raise ValueError(f"text is {len(value)} characters, over the limit of {max_chars}")
        tokens = value.split()
    elif isinstance(value, (list, tuple, np.ndarray)):
        if len(value) > max_chars:
            raise ValueError(f"text is {len(value)} tokens, over the limit of {max_chars}")
        if not all(isinstance(t, str) for t in value):
            bad = next(t for t in value if not isinstance(t, str))
            raise ValueError(f"text tokens must be strings, got a {type(bad).__name__}")
        if sum(len(t) for t in value) > max_chars:
            raise ValueError(f"text is over the limit of {max_chars} characters")
        tokens = list(value)
    else:
        raise ValueError(f"text must be a string or a list of string tokens, got {type(value).__name__}")
    if not tokens:
        raise ValueError("text is empty")
    return tokens


def _context(value: Any, max_chars: int, max_words: int) -> str | None:
    """The row's context as at most ``max_words`` words (the context encoder reads no more), or None."""
    if _is_missing(value):
        return None
    if not isinstance(value, str):
        raise ValueError(f"context must be a string, got {type(value).__name__}")
    if len(value) > max_chars:
        raise ValueError(f"context is {len(value)} characters, over the limit of {max_chars}")
    words = value.split()
    return " ".join(words[:max_words]) or None


def _batch_size(params: dict | None, limits: ServingLimits) -> int:
    from mlflow.exceptions import MlflowException

    raw = (params or {}).get("batch_size", 32)
    if isinstance(raw, bool) or not isinstance(raw, (int, str)) or not str(raw).strip().lstrip("-").isdigit():
        raise MlflowException.invalid_parameter_value(f"batch_size must be an integer, got {raw!r}")
    size = int(raw)
    if not 1 <= size <= limits.max_batch_size:
        raise MlflowException.invalid_parameter_value(
            f"batch_size must be between 1 and {limits.max_batch_size}, got {size}"
        )
    return size


def _output_format(params: dict | None) -> str:
    """``dict`` (the default): a list of dicts. ``json``: each row's dict as a JSON string, for consumers whose column
    types cannot hold a value that is sometimes null and sometimes a struct (`spark_udf` converts every row of a struct
    result to the declared type; `from_json` reads a JSON string into one, nulls included)."""
    from mlflow.exceptions import MlflowException

    output = (params or {}).get("output", "dict")
    if output not in ("dict", "json"):
        raise MlflowException.invalid_parameter_value(f"output must be 'dict' or 'json', got {output!r}")
    return str(output)


def _span(value: Any, field: str, n_tokens: int) -> Span:
    if _is_missing(value):
        raise ValueError(f"{field} span is missing (expected [start, end) token offsets)")
    try:
        start, end = (int(v) for v in value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{field} must be [start, end), got {value!r}") from error
    span = Span(start, end)
    if not span.fits(n_tokens):
        raise ValueError(f"{field} span [{start}, {end}) is outside the text's {n_tokens} tokens")
    return span


def _image(row_id: str, value: Any, limits: ServingLimits) -> Image.Image:
    """The row's image as RGB: its bytes, or a file name read (safely) from the operator's image directory; behind the
    size limit and the decompression-bomb guard every reader uses."""
    from components.common import images

    max_pixels = min(images.DEFAULT_MAX_PIXELS, limits.max_image_pixels)
    try:
        if isinstance(value, (bytes, bytearray, memoryview)):
            if len(value) > limits.max_image_bytes:
                raise ValueError(f"image is {len(value)} bytes, over the limit of {limits.max_image_bytes}")
            return images.decode_image(row_id, bytes(value), max_pixels)
        if not isinstance(value, str):
            raise ValueError(f"image must be bytes or a file name, got {type(value).__name__}")
        if limits.image_dir is None:
            raise ValueError(
                f"image file names are not accepted: no image directory is configured ({IMAGE_DIR_ENV}); "
                "send the image's bytes"
            )
        data = images.read_image_under(limits.image_dir, value, limits.max_image_bytes)
        return images.decode_image(row_id, data, max_pixels, where=repr(value))
    except images.ImageProblem as error:
        raise ValueError(f"image {error.reason}") from error


def _in_scoring_server() -> bool:
    """Whether this process is MLflow's scoring server, where ``max_rows`` applies to each request.

    MLflow's scoring server sets ``_MLFLOW_IS_IN_SERVING_ENVIRONMENT=true`` in its own process when it starts
    (mlflow/pyfunc/scoring_server/__init__.py, ``init``): `mlflow models serve`, the image of `mlflow models
    build-docker`, and spark_udf's per-executor server (env managers other than ``local``) all go through it. It is read
    on every call, not in load_context: the server loads the model first and sets the variable afterwards. The other
    choices were worse: a server-only wrapper would need its own server, and a limit the operator must remember to set
    would leave `mlflow models serve` unbounded by default. MLflow's own batch CLI (`mlflow models predict`) simulates
    that environment and so is held to the limit too. tests/test_serving.py checks the refusal against a real
    `mlflow models serve`, so a change in MLflow that drops the variable fails a test rather than unbounding the server.
    """
    from mlflow.environment_variables import _MLFLOW_IS_IN_SERVING_ENVIRONMENT

    return bool(_MLFLOW_IS_IN_SERVING_ENVIRONMENT.get())


def load_shapca(model_uri: str) -> ShapCA:
    """The ShapCA model inside a logged or registered pyfunc model (e.g. `models:/shapca-twitter2017@champion`)."""
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().model


class ShapCAPyfunc(PythonModel):
    # Class-level defaults so that a wrapper built in-process (tests, `evaluate`) is bounded too; load_context resolves
    # the model_config and the operator's environment.
    limits: ServingLimits = ServingLimits()
    inference: str = "plain"  # the inference variant (inference.py), resolved by load_context
    model: ShapCA  # set by load_context (or by hand in-process)

    def load_context(self, context: PythonModelContext) -> None:  # MLflow's name: the model's artifacts and config
        from components.model.shapca import ShapCA

        model_config = getattr(context, "model_config", None)
        self.limits = ServingLimits.resolve(model_config)
        self.inference = resolve_inference(model_config)  # before the weights: a bad value fails fast
        self.model = apply_inference(ShapCA.from_pretrained(context.artifacts[MODEL_ARTIFACT]), self.inference)
        _log.info("shapca model loaded: inference %s", self.inference)

    def _record(self, row_id: str, row: dict) -> Example:
        """The row as the record the processor takes (the task says which; its gold labels are placeholders that
        prediction ignores)."""
        tokens = _tokens(row.get("text"), self.limits.max_field_chars)
        task = get_task(self.model.task)
        spans = {name: _span(row.get(name), name, len(tokens)) for name in task.serving_spans}
        return task.serving_record(row_id, tokens, spans, self.model.labels)

    def _format(self, example: Example, prediction: Any, kept_words: int) -> dict[str, Any]:
        task = get_task(self.model.task)
        dropped = len(example.tokens) - kept_words
        # A task that reads the whole sentence or fails the row (entity markers) reports no cut: only taggers do.
        cut = dropped > 0 and task.warns_on_cut
        truncated = {"kept_words": kept_words, "dropped_words": dropped} if cut else None
        return task.to_json(example, prediction) | {"truncated": truncated, "error": None}

    def _predict_rows(self, rows: list[tuple[int, Any]], contexts: dict, images: dict) -> list[dict]:
        """Outputs of (row position, record) pairs predicted as one batch. A row the processor rejects (an entity
        marker past model.max_text_tokens) fails the batch, so then each row is predicted alone: only it gets the
        error."""
        items = [(record, contexts.get(record.id), images.get(record.id)) for _, record in rows]
        try:
            batch = self.model.processor(items)
        except ValueError as error:
            if len(rows) == 1:
                return [{"truncated": None, "error": f"row {rows[0][0]}: {error}"}]
            return [out for row in rows for out in self._predict_rows([row], contexts, images)]
        kept = batch.word_mask.sum(dim=1).tolist()
        predictions = self.model.predict(batch)
        return [
            self._format(record, prediction, int(k))
            for (_, record), prediction, k in zip(rows, predictions, kept, strict=False)
        ]

    def _predict_chunk(self, offset: int, rows: list[dict]) -> list[dict]:
        """Outputs of ``rows`` (input positions ``offset``, ``offset + 1``, ...): read, their images decoded, predicted.
        Everything built here is let go when it returns: at most one chunk of records and decoded images at a time."""
        limits = self.limits
        outputs: list[dict | None] = [None] * len(rows)
        valid: list[tuple[int, Any]] = []  # (row position, record) of the rows that parsed
        contexts: dict[str, str] = {}
        images: dict[str, Image.Image] = {}
        for j, row in enumerate(rows):
            i = offset + j
            row_id = str(i)
            try:
                record = self._record(row_id, row)
                context = _context(row.get("context"), limits.max_field_chars, self.model.config.max_context_tokens)
                value = row.get("image")
                if not _is_missing(value) and self.model.uses_images:
                    images[row_id] = _image(row_id, value, limits)
            except ValueError as error:
                outputs[j] = {"truncated": None, "error": f"row {i}: {error}"}
                continue
            if context:
                contexts[row_id] = context
            valid.append((i, record))
        if valid:
            for (i, _), output in zip(valid, self._predict_rows(valid, contexts, images), strict=False):
                outputs[i - offset] = output
        return outputs  # type: ignore[return-value]

    # No MLflow context argument: MLflow passes one only to a predict that names it (its documented form, which the
    # base class's signature does not spell), and everything the model needs was read in load_context.
    def predict(self, model_input: pd.DataFrame, params: dict | None = None) -> list[dict] | list[str]:  # type: ignore[override]
        from mlflow.exceptions import MlflowException

        limits = self.limits
        if not isinstance(model_input, pd.DataFrame):
            raise MlflowException.invalid_parameter_value(
                f"expected a DataFrame with a 'text' column, got {type(model_input).__name__}"
            )
        if len(model_input) > limits.max_rows and _in_scoring_server():
            # Refused before a single row is read: the caller splits the request (HTTP 400 from mlflow models serve).
            raise MlflowException.invalid_parameter_value(
                f"request has {len(model_input)} rows, over the limit of {limits.max_rows} rows per request; "
                "split it into smaller requests"
            )
        batch_size = _batch_size(params, limits)
        output = _output_format(params)
        outputs: list = []
        for start in range(0, len(model_input), batch_size):
            rows = model_input.iloc[start : start + batch_size].to_dict(orient="records")
            chunk = self._predict_chunk(start, rows)
            outputs += [json.dumps(o, ensure_ascii=False) for o in chunk] if output == "json" else chunk
        return outputs
