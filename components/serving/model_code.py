"""The file MLflow logs as the Shap-CA model ("models from code").

Loading a registered version runs this file, with the model's own copy of `components/` (its `code_paths`,
packaging.py) first on `sys.path`: the model is defined by code that travels with it, and no pickled object is ever
loaded. The weights are the `model` artifact, a `ShapCA.save_pretrained` directory (safetensors + JSON).
"""

import mlflow.models

from components.serving.pyfunc import ShapCAPyfunc

mlflow.models.set_model(ShapCAPyfunc())
