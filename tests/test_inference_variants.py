"""The inference variant, an option of the logged model (issue 25): chosen by model_config or the operator's
environment, refused clearly when unknown, and an int8 model that predicts what the plain one does."""

from __future__ import annotations

import re

import mlflow
import pandas as pd
import pytest
import torch

from components.model.shapca import ShapCA
from components.model.shapca_config import ShapCAConfig
from components.serving.harness import TWEETS
from components.serving.inference import apply_inference, resolve_inference
from components.serving.packaging import log_shapca_model
from components.tracking.mlflow_setup import setup_tracking

LABELS = ["PER", "LOC", "ORG", "MISC"]


def _tiny(tiny_bert_dir) -> ShapCA:
    torch.manual_seed(0)
    config = ShapCAConfig(text_encoder=str(tiny_bert_dir), align_dim=16, permutations=4)
    return ShapCA.from_config(config, "ner", LABELS).eval()


def test_the_variant_comes_from_model_config_then_the_environment():
    assert resolve_inference(None, {}) == "plain"
    assert resolve_inference({"inference": "int8"}, {}) == "int8"
    assert resolve_inference({"inference": "int8"}, {"SHAPCA_SERVE_INFERENCE": "plain"}) == "plain"
    assert resolve_inference({"serving": {"max_rows": 3}}, {"SHAPCA_SERVE_INFERENCE": "int8"}) == "int8"


@pytest.mark.parametrize(
    "model_config, environ, message",
    [
        ({"inference": "int4"}, {}, "model_config['inference'] must be one of plain, int8, got 'int4'"),
        ({"inference": ["int8"]}, {}, "model_config['inference'] must be one of plain, int8, got ['int8']"),
        (None, {"SHAPCA_SERVE_INFERENCE": "fast"}, "SHAPCA_SERVE_INFERENCE must be one of plain, int8, got 'fast'"),
    ],
)
def test_an_unknown_variant_is_refused_naming_the_field_and_the_choices(model_config, environ, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        resolve_inference(model_config, environ)


def test_int8_scores_stay_close_to_plain(tiny_bert_dir):
    """Tolerance: the head's per-token label probabilities differ by at most 0.05 (int8 weights and activations of a
    random tiny encoder; the trained MiniLM's F1 is in docs/PERFORMANCE.md), and the encoders' Linear layers really
    are quantised."""
    plain, quantised = _tiny(tiny_bert_dir), apply_inference(_tiny(tiny_bert_dir), "int8")
    quantised_linear = torch.ao.nn.quantized.dynamic.Linear
    assert any(isinstance(m, quantised_linear) for m in quantised.text_encoder.modules())
    assert not any(isinstance(m, quantised_linear) for m in plain.modules())
    assert not any(isinstance(m, quantised_linear) for m in quantised.head.modules())  # the head stays float32

    from components.serving.pyfunc import ShapCAPyfunc

    wrapper = ShapCAPyfunc()
    wrapper.model = plain
    records = [wrapper._record(str(i), {"text": text}) for i, text in enumerate(TWEETS)]
    batch = plain.processor([(record, None, None) for record in records])
    with torch.inference_mode():
        probs = {name: model(batch).logits.softmax(-1) for name, model in (("plain", plain), ("int8", quantised))}
    mask = batch.word_mask.bool()
    difference = (probs["plain"] - probs["int8"]).abs()[mask]
    assert difference.max().item() < 0.05, difference.max().item()
    assert difference.max().item() > 0  # it did compute something else


def test_a_logged_model_loads_int8_when_the_consumer_asks(tiny_bert_dir, tmp_path):
    _tiny(tiny_bert_dir).save_pretrained(tmp_path / "best")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    setup = setup_tracking("inference-variants", tracking_uri=uri)
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(experiment_id=setup.experiment_id):
        info = log_shapca_model(tmp_path / "best", "ner")
    frame = pd.DataFrame({"text": TWEETS[:3]})

    loaded = mlflow.pyfunc.load_model(info.model_uri, model_config={"inference": "int8"})
    assert loaded.unwrap_python_model().inference == "int8"
    out = loaded.predict(frame)
    assert len(out) == 3 and all(row["error"] is None and "entities" in row for row in out)
    assert mlflow.pyfunc.load_model(info.model_uri).unwrap_python_model().inference == "plain"

    with pytest.raises(ValueError, match="model_config\\['inference'\\] must be one of plain, int8, got 'int16'"):
        mlflow.pyfunc.load_model(info.model_uri, model_config={"inference": "int16"})
