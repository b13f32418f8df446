"""What one request may ask of a served model, resolved from defaults, the model's MLflow ``model_config``
(``{"serving": {...}}``) and the operator's environment (``SHAPCA_SERVE_<FIELD>``, ``SHAPCA_IMAGE_DIR``), in that
order, the environment last. Plain Python: `shapca predict` checks its input against them before loading torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

SERVING_CONFIG_KEY = "serving"  # the key of ServingLimits' fields in the model's MLflow model_config
ENV_PREFIX = "SHAPCA_SERVE_"  # SHAPCA_SERVE_MAX_ROWS=..., read when the model loads; the operator's last word
IMAGE_DIR_ENV = "SHAPCA_IMAGE_DIR"


@dataclass(frozen=True)
class ServingLimits:
    """What one request may ask of the model (``max_rows``: one request to the scoring server; the others: each row
    of any predict call, in or out of a server). Defaults, overridden by the model's MLflow ``model_config``
    (``{"serving": {...}}``), overridden by the environment (``SHAPCA_SERVE_<FIELD>``, ``SHAPCA_IMAGE_DIR``)."""

    # Rows per request to MLflow's scoring server (`mlflow models serve`); more: the request is refused (HTTP 400).
    # A server setting: in-process predict takes any number of rows, in chunks of batch_size (pyfunc.py).
    max_rows: int = 256
    max_field_chars: int = 20_000  # characters of a text or context (tokens of a token-list text); more: row error
    max_image_bytes: int = 5 * 1024 * 1024  # an image's bytes, given inline or read from image_dir; more: row error
    max_image_pixels: int = 16_000_000  # width x height before decoding (48 MB as RGB); more: row error
    max_batch_size: int = 256  # the largest `batch_size` param a request may ask for
    image_dir: str | None = None  # where image names are read from; None: only inline bytes are accepted

    @classmethod
    def resolve(
        cls, model_config: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> ServingLimits:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = dict((model_config or {}).get(SERVING_CONFIG_KEY) or {})
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"model_config[{SERVING_CONFIG_KEY!r}]: unknown serving limits {sorted(unknown)}")
        for f in fields(cls):
            raw = environ.get(IMAGE_DIR_ENV if f.name == "image_dir" else ENV_PREFIX + f.name.upper())
            if raw not in (None, ""):
                values[f.name] = raw
        limits: dict[str, Any] = {}
        for name, raw in values.items():
            if name == "image_dir":
                limits[name] = None if raw in (None, "") else str(raw)
                continue
            try:
                number = int(raw)
            except (TypeError, ValueError):
                raise ValueError(f"serving limit {name} must be a positive integer, got {raw!r}") from None
            if number <= 0:
                raise ValueError(f"serving limit {name} must be a positive integer, got {raw!r}")
            limits[name] = number
        return cls(**limits)
