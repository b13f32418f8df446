"""The pyfunc wrapper on a tiny in-memory model (no MLflow store): rows it cannot read, or whose batch it cannot
build, get an error of their own while the other rows of the same batch are predicted."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import torch
from PIL import Image

import components.contexts.config as contexts_config
from components.model.config import ShapCAConfig
from components.model.shapca import ShapCA
from components.tracking.pyfunc_model import ShapCAPyfunc

RELATIONS = ["/per/org/member_of", "/per/loc/place_of_residence"]  # no "None": the placeholder must not need it


def _pyfunc(model: ShapCA) -> ShapCAPyfunc:
    wrapper = ShapCAPyfunc()
    wrapper.model = model.eval()  # what load_context sets, without an MLflow artifact
    return wrapper


def test_re_row_past_the_token_window_errors_alone(tiny_bert_dir):
    torch.manual_seed(0)
    config = ShapCAConfig(text_encoder=str(tiny_bert_dir), align_dim=16, permutations=4, max_text_tokens=16)
    wrapper = _pyfunc(ShapCA.from_config(config, "re", RELATIONS))
    long_text = " ".join(["word"] * 40) + " Tony lives in Paris"
    frame = pd.DataFrame({
        "text": ["Tony lives in Paris", long_text, "Kawhi plays for the Spurs", "Tony lives in Paris"],
        "head": [[0, 1], [40, 41], [0, 1], [0, 9]],
        "tail": [[3, 4], [43, 44], [4, 5], [3, 4]],
    })
    out = wrapper.predict(None, frame, params={"batch_size": 8})
    assert len(out) == 4
    for i in (0, 2):
        assert out[i]["error"] is None and out[i]["relation"] in RELATIONS and 0.0 < out[i]["score"] <= 1.0
    assert out[1]["error"].startswith("row 1: ") and "max_text_tokens=16" in out[1]["error"]
    assert out[3]["error"].startswith("row 3: ") and "head span [0, 9) is outside" in out[3]["error"]


def test_images_pass_the_decompression_bomb_guard(tiny_bert_dir, tiny_clip_dir, tmp_path, monkeypatch):
    config = ShapCAConfig(text_encoder=str(tiny_bert_dir), image_encoder=tiny_clip_dir, align_dim=16, permutations=4)
    wrapper = _pyfunc(ShapCA.from_config(config, "ner", ["PER", "LOC"]))

    def png(size: int) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
        return buffer.getvalue()

    small_file = tmp_path / "small.png"
    small_file.write_bytes(png(20))
    monkeypatch.setattr(contexts_config, "DEFAULT_MAX_PIXELS", 50 * 50)  # a 60x60 image is then a "bomb"
    frame = pd.DataFrame({
        "text": ["Tony in Paris", "Tony in Paris", "Tony in Paris", "Tony in Paris"],
        "image": [png(20), str(small_file), png(60), b"not an image"],
    })
    out = wrapper.predict(None, frame)
    assert out[0]["error"] is None and out[1]["error"] is None
    assert out[2]["error"].startswith("row 2: image oversized: 60x60 = 3600 pixels exceeds the limit of 2500")
    assert out[3]["error"].startswith("row 3: image unreadable")
