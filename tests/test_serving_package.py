"""What a logged model carries: its code is components/serving/model_code.py and a copy of the packages that code
imports (packaging.SERVED_PACKAGES), nothing else of the project; the copy alone serves a prediction."""

from __future__ import annotations

import json
import subprocess
import sys

import grimp

from components.serving.packaging import SERVED_PACKAGES, copy_served_code


def test_the_served_packages_are_exactly_what_the_model_code_imports():
    graph = grimp.build_graph("components")
    imported = graph.find_upstream_modules("components.serving.model_code")  # lazy imports inside functions too
    assert {module.split(".")[1] for module in imported} == set(SERVED_PACKAGES)


def test_the_copy_alone_loads_the_pyfunc_and_none_of_the_training_code(tmp_path, tiny_bert_dir):
    """In a process whose only `components` is the copy: the model's code imports, builds a model and predicts."""
    copy_served_code(tmp_path)
    assert sorted(p.name for p in (tmp_path / "components").iterdir()) == sorted([*SERVED_PACKAGES, "__init__.py"])
    code = f"""
import json, sys
sys.path.insert(0, {str(tmp_path)!r})
import pandas as pd
import components
assert components.__file__.startswith({str(tmp_path)!r}), components.__file__
from components.model.shapca import ShapCA
from components.model.shapca_config import ShapCAConfig
from components.serving.pyfunc import ShapCAPyfunc
wrapper = ShapCAPyfunc()
wrapper.model = ShapCA.from_config(ShapCAConfig(text_encoder={str(tiny_bert_dir)!r}, align_dim=16), "ner", ["PER"])
out = wrapper.predict(pd.DataFrame({{"text": ["Obama visits Paris"], "context": ["a man"]}}))
assert out[0]["error"] is None and "entities" in out[0], out
print(json.dumps(sorted({{m.split(".")[1] for m in sys.modules if m.startswith("components.")}})))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(json.loads(done.stdout.strip().splitlines()[-1])) <= set(SERVED_PACKAGES)


def test_models_logged_before_the_serving_package_find_their_pyfunc_in_this_process():
    """Their model_code.py imports components.tracking.pyfunc_model; in a process that already imported this project
    that name resolves here, to today's pyfunc (which reads their format-2 directories: tests/test_model.py)."""
    from components.serving.pyfunc import ShapCAPyfunc
    from components.tracking.pyfunc_model import ShapCAPyfunc as logged_before

    assert logged_before is ShapCAPyfunc
