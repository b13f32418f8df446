"""How a trained model is logged so that it serves anywhere: MLflow "models from code".

    log_shapca_model(best_dir, task)   # in an active run: the pyfunc, its signature and input example, pinned pins

The logged model is `model_code.py` plus a copy of the packages that code imports (`SERVED_PACKAGES` of
`components/`: nothing pickled, no training, tracking or orchestration code), the `ShapCA.save_pretrained` directory
as the artifact `model`, and pinned pip requirements, so that a virtualenv that never saw this repository loads and
serves it after `pip install -r requirements.txt` of the model alone. The model keeps that copy: a version
registered today is served by today's code, whatever the project's code becomes.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow.pyfunc
import pandas as pd

from components.serving.inference import INFERENCE_CONFIG_KEY, resolve_inference
from components.serving.pyfunc import MODEL_ARTIFACT
from components.tasks import get_task

if TYPE_CHECKING:
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo

COMPONENTS_DIR = Path(__file__).resolve().parents[1]
MODEL_CODE = Path(__file__).with_name("model_code.py")
# The packages of components/ that the model's code imports (tests/test_serving_package.py checks the list against
# the import graph): the model, its tasks, the records, the helpers and this package.
SERVED_PACKAGES = ("common", "data", "model", "serving", "tasks")

# What a consumer's fresh virtualenv needs to load and serve the model: the distributions the model's code imports,
# pinned to the versions this process runs with (the ones requirements/runtime.txt installed).
SERVING_DISTRIBUTIONS = (
    "mlflow",
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "pytorch-crf",
    "numpy",
    "pandas",
    "pillow",
    "pydantic",
    "pyyaml",
    "tqdm",
)


def signature_and_example(task: str) -> tuple[ModelSignature, pd.DataFrame]:
    """The input contract a consumer sees in the MLflow UI, and an input example that satisfies it."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    columns: list[ColSpec | TensorSpec] = [
        ColSpec(AnyType(), "text"),
        ColSpec("string", "context", required=False),
        ColSpec(AnyType(), "image", required=False),
    ]
    rules = get_task(task)
    columns += [ColSpec(AnyType(), name) for name in rules.serving_spans]
    example = {name: [value] for name, value in rules.serving_example().items()}
    example["context"] = ["a man in a suit standing in front of a red bridge"]
    # batch_size travels as a request param (predict checks its range against the serving limits); output="json"
    # answers each row as one JSON string, for consumers whose column types cannot hold a row's nulls (Spark).
    params = ParamSchema([ParamSpec("batch_size", "long", 32), ParamSpec("output", "string", "dict")])
    return ModelSignature(inputs=Schema(columns), params=params), pd.DataFrame(example)


def serving_requirements() -> list[str]:
    """`name==version` for each serving distribution. A local build label (`2.13.0+cpu`) is dropped, so the same pin
    installs the CPU or the CUDA build of torch, whichever the consumer's pip is configured to find."""
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in SERVING_DISTRIBUTIONS]


def copy_served_code(destination: Path) -> Path:
    """`destination/components`: the package's `__init__.py` and the `SERVED_PACKAGES`, without bytecode."""
    code = Path(destination) / "components"
    code.mkdir(parents=True)
    shutil.copy2(COMPONENTS_DIR / "__init__.py", code / "__init__.py")
    for package in SERVED_PACKAGES:
        shutil.copytree(COMPONENTS_DIR / package, code / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return code


def log_shapca_model(model_dir: Path, task: str, name: str = "model", inference: str = "plain") -> ModelInfo:
    """Log a `save_pretrained` directory as a self-contained pyfunc in the active run; returns MLflow's ModelInfo.

    `inference` is the variant the model loads with (inference.py); it is logged in the model_config because MLflow
    lets a consumer override at load (`load_model(uri, model_config={"inference": "int8"})`) only the keys the
    logged model_config already has."""
    model_config = {INFERENCE_CONFIG_KEY: resolve_inference({INFERENCE_CONFIG_KEY: inference}, environ={})}
    signature, example = signature_and_example(task)
    with tempfile.TemporaryDirectory() as tmp:
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(MODEL_CODE),
            code_paths=[str(copy_served_code(Path(tmp)))],
            artifacts={MODEL_ARTIFACT: str(model_dir)},
            pip_requirements=serving_requirements(),
            signature=signature,
            input_example=example,
            model_config=model_config,
        )
