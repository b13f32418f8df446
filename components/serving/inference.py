"""How a loaded model computes its rows: the inference variant, an option of the logged model (issue 25).

    plain  the model as trained (float32 everywhere)
    int8   dynamic int8 quantisation of the encoders' Linear layers (torch.ao.quantization.quantize_dynamic): weights
           stored as int8, activations quantised per batch on the fly. CPU only; the heads, fusion and alignment
           layers stay float32 (they are small, and the head's scores are what F1 reads).

Chosen, like the serving limits (limits.py), by the model's MLflow ``model_config`` (``{"inference": "int8"}``, given
at log time or by the consumer: ``mlflow.pyfunc.load_model(uri, model_config={"inference": "int8"})``), overridden
by the operator's environment (``SHAPCA_SERVE_INFERENCE=int8``). The variant is resolved without torch (a bad value
fails before any weight is read); `apply_inference` needs torch and runs once, when the model loads.
docs/PERFORMANCE.md "Cheaper rows" gives what each variant costs and scores.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from components.model.shapca import ShapCA

INFERENCE_CONFIG_KEY = "inference"  # model_config["inference"]: one of INFERENCE_VARIANTS
INFERENCE_ENV = "SHAPCA_SERVE_INFERENCE"  # the operator's last word, like SHAPCA_SERVE_<LIMIT>
INFERENCE_VARIANTS = ("plain", "int8")


def resolve_inference(model_config: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The variant: "plain" by default, then model_config["inference"], then $SHAPCA_SERVE_INFERENCE."""
    environ = os.environ if environ is None else environ
    variant: Any = (model_config or {}).get(INFERENCE_CONFIG_KEY) or "plain"
    where = f"model_config[{INFERENCE_CONFIG_KEY!r}]"
    if environ.get(INFERENCE_ENV, "") != "":
        variant, where = environ[INFERENCE_ENV], INFERENCE_ENV
    if variant not in INFERENCE_VARIANTS:
        raise ValueError(f"{where} must be one of {', '.join(INFERENCE_VARIANTS)}, got {variant!r}")
    return str(variant)


def apply_inference(model: ShapCA, variant: str) -> ShapCA:
    """The model ready to predict with `variant` (in place for "plain"; "int8" swaps the encoders' Linear layers
    for dynamically quantised ones). For prediction only: the quantised layers have no gradients."""
    if variant not in INFERENCE_VARIANTS:
        raise ValueError(f"inference variant must be one of {', '.join(INFERENCE_VARIANTS)}, got {variant!r}")
    model.eval()
    if variant == "int8":
        import warnings

        import torch
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():
            # torch 2.13 announces that quantised tensors will move to torchao one day: the pinned torch runs them,
            # and the warning would otherwise greet every consumer's load.
            warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated", category=Warning)
            for name in ("text_encoder", "context_encoder", "image_encoder"):
                encoder = getattr(model, name)
                if encoder is not None:
                    # inplace: the encoder object stays the one the model (and a context cache wrapping it) holds
                    quantize_dynamic(encoder, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return model
