"""Shap-CA as an MLflow pyfunc model: what consumers load from `models:/shapca-<dataset>@champion`.

Input: a DataFrame, one row per text.
  text     str (whitespace-tokenized) or list of tokens            required
  context  str, a description of the row's image (e.g. from an LMM)  optional
  image    a file path (str) or the image's bytes                    optional; used when the model has an image encoder
  head     [start, end) token span of the head entity               RE only
  tail     [start, end) token span of the tail entity               RE only
Output: one dict per row, in row order, with `error` None or a message for that row (a bad row never fails the
batch):
  NER    {"entities": [{"start", "end", "type", "text", "score"}], "error"}
  RE     {"relation", "score", "error"}
  joint  {"triples": [{"head": [s, e], "relation", "tail": [s, e], "score"}], "error"}
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

from components.data.bio import OUTSIDE
from components.data.records import JointExample, NerExample, ReExample, Span

MODEL_ARTIFACT = "model"  # the artifact key under which `ShapCA.save_pretrained` output travels


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _tokens(value: Any) -> list[str]:
    if _is_missing(value):
        raise ValueError("text is missing")
    if isinstance(value, str):
        tokens = value.split()
    elif hasattr(value, "__iter__"):
        tokens = [str(t) for t in value]
    else:
        raise ValueError(f"text must be a string or a list of tokens, got {type(value).__name__}")
    if not tokens:
        raise ValueError("text is empty")
    return tokens


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


def _image(row_id: str, value: Any):
    """The row's image (its bytes, or a file path) as RGB, behind the decompression-bomb guard every reader uses."""
    from components.contexts.config import DEFAULT_MAX_PIXELS
    from components.contexts.images import ImageProblem, decode_image

    try:
        if isinstance(value, (bytes, bytearray)):
            return decode_image(row_id, bytes(value), DEFAULT_MAX_PIXELS)
        path = Path(str(value))
        return decode_image(row_id, path.read_bytes(), DEFAULT_MAX_PIXELS, where=path)
    except ImageProblem as error:
        raise ValueError(f"image {error.reason}") from error
    except OSError as error:
        raise ValueError(f"image unreadable: {error}") from error


class ShapCAPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from components.model.shapca import ShapCA

        self.model = ShapCA.from_pretrained(context.artifacts[MODEL_ARTIFACT])
        self.model.eval()

    def _record(self, row_id: str, row: dict) -> Any:
        """The row as the record the collator takes. Its gold labels are placeholders: the collator needs some,
        prediction ignores them (RE: the model's first label, which every RE model has)."""
        tokens = _tokens(row.get("text"))
        task = self.model.task
        if task == "ner":
            return NerExample(id=row_id, image_id=row_id, tokens=tokens, tags=[OUTSIDE] * len(tokens))
        if task == "re":
            head, tail = _span(row.get("head"), "head", len(tokens)), _span(row.get("tail"), "tail", len(tokens))
            relation = self.model.labels[0]
            return ReExample(id=row_id, image_id=row_id, tokens=tokens, head=head, tail=tail, relation=relation)
        return JointExample(id=row_id, image_id=row_id, tokens=tokens, entities=[], triples=[])

    def _format(self, example, prediction) -> dict:
        task = self.model.task
        if task == "ner":
            entities = [
                {"start": s.start, "end": s.end, "type": label, "text": " ".join(example.tokens[s.start : s.end]),
                 "score": float(score)}
                for s, label, score in prediction
            ]
            return {"entities": entities, "error": None}
        if task == "re":
            label, score = prediction
            return {"relation": label, "score": float(score), "error": None}
        triples = [
            {"head": [t.head.start, t.head.end], "relation": t.relation, "tail": [t.tail.start, t.tail.end],
             "score": float(score)}
            for t, score in prediction
        ]
        return {"triples": triples, "error": None}

    def _predict_rows(self, rows: list[tuple[int, Any]], contexts: dict, images: dict) -> list[dict]:
        """Outputs of (row position, record) pairs predicted as one batch. A row the collator rejects (an RE entity
        marker past model.max_text_tokens) fails the batch, so then each row is predicted alone: only it gets the
        error."""
        try:
            batch = self.model.collator()([r for _, r in rows], contexts=contexts or None, images=images or None)
        except ValueError as error:
            if len(rows) == 1:
                return [{"error": f"row {rows[0][0]}: {error}"}]
            return [out for row in rows for out in self._predict_rows([row], contexts, images)]
        return [self._format(record, prediction) for (_, record), prediction in zip(rows, self.model.predict(batch))]

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> list[dict]:
        rows = model_input.to_dict(orient="records")
        outputs: list[dict | None] = [None] * len(rows)
        valid: list[tuple[int, Any]] = []  # (row position, record) of the rows that parsed
        contexts, images = {}, {}
        for i, row in enumerate(rows):
            row_id = str(i)
            try:
                record = self._record(row_id, row)
                if not _is_missing(row.get("image")) and self.model.uses_images:
                    images[row_id] = _image(row_id, row["image"])
            except ValueError as error:
                outputs[i] = {"error": f"row {i}: {error}"}
                continue
            if not _is_missing(row.get("context")) and str(row["context"]).strip():
                contexts[row_id] = str(row["context"])
            valid.append((i, record))
        batch_size = int((params or {}).get("batch_size", 32))
        for start in range(0, len(valid), batch_size):
            chunk = valid[start : start + batch_size]
            for (i, _), output in zip(chunk, self._predict_rows(chunk, contexts, images)):
                outputs[i] = output
        return outputs  # type: ignore[return-value]


def signature_and_example(task: str):
    """The input contract a consumer sees in the MLflow UI, and an input example that satisfies it."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    columns = [ColSpec(AnyType(), "text"), ColSpec("string", "context", required=False),
               ColSpec(AnyType(), "image", required=False)]
    example = {"text": ["Obama visits the Golden Gate Bridge in San Francisco"],
               "context": ["a man in a suit standing in front of a red bridge"]}
    if task == "re":
        columns += [ColSpec(AnyType(), "head"), ColSpec(AnyType(), "tail")]
        example = {"text": ["Obama visits the Golden Gate Bridge"], "head": [[0, 1]], "tail": [[2, 5]],
                   "context": ["a man in a suit standing in front of a red bridge"]}
    return ModelSignature(inputs=Schema(columns)), pd.DataFrame(example)


# What a consumer's fresh virtualenv needs to load and serve the model: the distributions the model's code imports,
# pinned to the versions this process runs with (the ones requirements.lock installed).
SERVING_DISTRIBUTIONS = ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "pytorch-crf", "numpy",
                         "pandas", "pillow", "pydantic", "pyyaml", "tqdm")
COMPONENTS_DIR = Path(__file__).resolve().parents[1]
MODEL_CODE = Path(__file__).with_name("model_code.py")


def serving_requirements() -> list[str]:
    """`name==version` for each serving distribution. A local build label (`2.13.0+cpu`) is dropped, so the same pin
    installs the CPU or the CUDA build of torch, whichever the consumer's pip is configured to find."""
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in SERVING_DISTRIBUTIONS]


def log_shapca_model(model_dir: Path, task: str, name: str = "model"):
    """Log a `save_pretrained` directory as a self-contained pyfunc in the active run; returns MLflow's ModelInfo.

    Self-contained: the model is `model_code.py` plus a copy of `components/` (models from code, nothing pickled) and
    pinned pip requirements, so a virtualenv that never saw this repository loads and serves it after
    `pip install -r requirements.txt` of the model alone.
    """
    import shutil
    import tempfile

    signature, example = signature_and_example(task)
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / "components"
        shutil.copytree(COMPONENTS_DIR, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(MODEL_CODE),
            code_paths=[str(code)],
            artifacts={MODEL_ARTIFACT: str(model_dir)},
            pip_requirements=serving_requirements(),
            signature=signature,
            input_example=example,
        )
