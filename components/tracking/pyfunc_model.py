"""Where the models logged before components/serving/ existed find their pyfunc class.

Such a model's own `model_code.py` imports `components.tracking.pyfunc_model`. A process that has already imported
this project's `components` (`shapca evaluate --model models:/...`) resolves that import here rather than in the
model's copy of the code, so this name stays: the model then loads with today's pyfunc and `ShapCA.from_pretrained`
(which reads their format-2 directories). New models import components.serving.pyfunc.
"""

from components.serving.pyfunc import ShapCAPyfunc

__all__ = ["ShapCAPyfunc"]
