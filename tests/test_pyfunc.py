"""The pyfunc wrapper on a tiny in-memory model (no MLflow store): rows it cannot read, or whose batch it cannot
build, get an error of their own while the other rows of the same batch are predicted."""

from __future__ import annotations

import dataclasses
import io
import os
import time

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException
from PIL import Image

import components.common.images as images
from components.model.shapca import ShapCA
from components.model.shapca_config import ShapCAConfig
from components.serving.limits import ServingLimits
from components.serving.pyfunc import ShapCAPyfunc

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
    frame = pd.DataFrame(
        {
            "text": ["Tony lives in Paris", long_text, "Kawhi plays for the Spurs", "Tony lives in Paris"],
            "head": [[0, 1], [40, 41], [0, 1], [0, 9]],
            "tail": [[3, 4], [43, 44], [4, 5], [3, 4]],
        }
    )
    out = wrapper.predict(frame, params={"batch_size": 8})
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
    wrapper.limits = dataclasses.replace(wrapper.limits, image_dir=str(tmp_path))
    monkeypatch.setattr(images, "DEFAULT_MAX_PIXELS", 50 * 50)  # a 60x60 image is then a "bomb"
    frame = pd.DataFrame(
        {
            "text": ["Tony in Paris", "Tony in Paris", "Tony in Paris", "Tony in Paris"],
            "image": [png(20), "small.png", png(60), b"not an image"],
        }
    )
    out = wrapper.predict(frame)
    assert out[0]["error"] is None and out[1]["error"] is None
    assert out[2]["error"].startswith("row 2: image oversized: 60x60 = 3600 pixels exceeds the limit of 2500")
    assert out[3]["error"].startswith("row 3: image unreadable")


# ---------------------------------------------------------------------------------------------------------------------
# Bounded serving (issue 14): limits, truncation flagged per row, strict input types, safe image names


@pytest.fixture(scope="module")
def ner(tiny_bert_dir):
    torch.manual_seed(0)
    config = ShapCAConfig(text_encoder=str(tiny_bert_dir), align_dim=16, permutations=4, max_text_tokens=16)
    return _pyfunc(ShapCA.from_config(config, "ner", ["PER", "LOC"]))


def test_a_text_past_the_window_is_cut_early_and_flagged(ner):
    words = 200_000  # about 1.4 MB of text: what used to take minutes is bounded by the 16-token window
    ner.limits = dataclasses.replace(ServingLimits(), max_field_chars=10**7)
    started = time.perf_counter()
    out = ner.predict(pd.DataFrame({"text": [" ".join(["word"] * words), "Tony lives in Paris"]}))
    elapsed = time.perf_counter() - started
    ner.limits = ServingLimits()
    assert out[0]["error"] is None and out[0]["truncated"]["dropped_words"] == words - out[0]["truncated"]["kept_words"]
    assert 0 < out[0]["truncated"]["kept_words"] <= 14  # 16 tokens minus [CLS] and [SEP]
    assert out[1]["error"] is None and out[1]["truncated"] is None
    assert elapsed < 20, f"a long text must not cost per word: {elapsed:.1f}s"


def test_rows_over_a_limit_get_their_own_error(ner):
    ner.limits = ServingLimits(max_field_chars=1000)
    frame = pd.DataFrame(
        {
            "text": ["x" * 1001, {"a": 1}, "Tony lives in Paris", ["Tony", 3], ["w"] * 1001, "Tony in Paris"],
            "context": [None, None, "c" * 1001, None, None, {"not": "text"}],
        }
    )
    out = ner.predict(frame)
    ner.limits = ServingLimits()
    assert out[0]["error"] == "row 0: text is 1001 characters, over the limit of 1000"
    assert out[1]["error"] == "row 1: text must be a string or a list of string tokens, got dict"
    assert out[2]["error"] == "row 2: context is 1001 characters, over the limit of 1000"
    assert out[3]["error"] == "row 3: text tokens must be strings, got a int"
    assert out[4]["error"] == "row 4: text is 1001 tokens, over the limit of 1000"
    assert out[5]["error"] == "row 5: context must be a string, got dict"


def test_the_row_limit_binds_the_scoring_server_not_an_in_process_call(ner, monkeypatch):
    """max_rows is a server setting: in MLflow's scoring server (which marks its process with the variable below; the
    real `mlflow models serve` is tests/test_serving.py's) a request over it is refused whole, with HTTP 400; in
    process the same call is predicted, chunk by chunk."""
    ner.limits = ServingLimits(max_rows=3)
    frame = pd.DataFrame({"text": ["a b"] * 4})
    try:
        assert [o["error"] for o in ner.predict(frame, params={"batch_size": 2})] == [None] * 4
        monkeypatch.setenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "true")
        with pytest.raises(MlflowException, match="request has 4 rows, over the limit of 3 rows") as refused:
            ner.predict(frame)
        assert refused.value.get_http_status_code() == 400
        assert len(ner.predict(frame.head(3))) == 3  # at the limit: served
    finally:
        ner.limits = ServingLimits()


def test_chunks_do_not_change_predictions_and_errors_keep_their_row(ner):
    """Many rows in small chunks: each row's output is the one it gets in a single batch, and a bad row in a later
    chunk names its position in the whole input."""
    texts = ["Tony lives in Paris", "Kawhi plays for the Spurs", "Obama visits Berlin", "a b c"] * 5
    texts[13] = "x" * 30
    frame = pd.DataFrame({"text": texts, "context": ["a man near a bridge", None] * 10})
    ner.limits = ServingLimits(max_field_chars=25)
    try:
        whole = ner.predict(frame, params={"batch_size": 32})
        chunked = ner.predict(frame, params={"batch_size": 3})
    finally:
        ner.limits = ServingLimits()
    assert whole[13]["error"] == chunked[13]["error"] == "row 13: text is 30 characters, over the limit of 25"
    assert [o["error"] is None for o in chunked] == [i != 13 for i in range(20)]
    assert sum(len(o.get("entities", [])) for o in whole) > 0  # the tiny model tags something to compare
    for a, b in zip(whole, chunked, strict=True):
        assert [(e["start"], e["end"], e["type"]) for e in a.get("entities", [])] == [
            (e["start"], e["end"], e["type"]) for e in b.get("entities", [])
        ]
        assert [e["score"] for e in a.get("entities", [])] == pytest.approx([e["score"] for e in b.get("entities", [])])


@pytest.mark.parametrize(
    "batch_size, message",
    [
        (0, "batch_size must be between 1 and 256, got 0"),
        (-1, "batch_size must be between 1 and 256, got -1"),
        (10**6, "batch_size must be between 1 and 256"),
        ("two", "batch_size must be an integer, got 'two'"),
        (1.5, "batch_size must be an integer, got 1.5"),
    ],
)
def test_a_bad_batch_size_is_a_clear_error(ner, batch_size, message):
    with pytest.raises(MlflowException, match=message):
        ner.predict(pd.DataFrame({"text": ["Tony in Paris"]}), params={"batch_size": batch_size})


def test_limits_come_from_model_config_then_the_environment(tmp_path):
    limits = ServingLimits.resolve(
        {"serving": {"max_rows": 10, "max_field_chars": 50}},
        {"SHAPCA_SERVE_MAX_ROWS": "7", "SHAPCA_IMAGE_DIR": str(tmp_path)},
    )
    assert (limits.max_rows, limits.max_field_chars, limits.image_dir) == (7, 50, str(tmp_path))
    with pytest.raises(ValueError, match="serving limit max_rows must be a positive integer, got '0'"):
        ServingLimits.resolve(None, {"SHAPCA_SERVE_MAX_ROWS": "0"})
    with pytest.raises(ValueError, match="unknown serving limits"):
        ServingLimits.resolve({"serving": {"max_row": 3}}, {})


def test_image_names_are_read_only_from_the_image_directory(tiny_bert_dir, tiny_clip_dir, tmp_path):
    config = ShapCAConfig(text_encoder=str(tiny_bert_dir), image_encoder=tiny_clip_dir, align_dim=16, permutations=4)
    wrapper = _pyfunc(ShapCA.from_config(config, "ner", ["PER", "LOC"]))
    images = tmp_path / "images"
    images.mkdir()
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(buffer, format="PNG")
    (images / "ok.png").write_bytes(buffer.getvalue())
    (images / "big.png").write_bytes(buffer.getvalue() + b"\0" * 2000)
    secret = tmp_path / "secret.png"
    secret.write_bytes(buffer.getvalue())
    os.symlink(secret, images / "link.png")
    os.symlink("/dev/zero", images / "zero.png")
    (images / "sub").mkdir()
    names = [
        "ok.png",
        "../secret.png",
        "../../etc/hostname",
        "/dev/zero",
        "zero.png",
        "link.png",
        "sub",
        "nothere.png",
        "big.png",
        b"x" * 3000,
    ]
    wrapper.limits = ServingLimits(image_dir=str(images), max_image_bytes=2000)
    out = wrapper.predict(pd.DataFrame({"text": ["Tony in Paris"] * len(names), "image": names}))
    errors = [o["error"] for o in out]
    assert errors[0] is None
    for i in (1, 2, 3, 4, 5):  # escapes, directly or through a symlink: refused before anything is opened
        assert errors[i] == f"row {i}: image refused: the path leaves the image directory", errors[i]
    assert errors[6] == "row 6: image refused: not a regular file"
    assert errors[7] == "row 7: image missing: no such file in the image directory"
    assert errors[8].startswith("row 8: image oversized:") and "over the limit of 2000" in errors[8]
    assert errors[9] == "row 9: image is 3000 bytes, over the limit of 2000"
    assert not any(str(tmp_path) in e for e in errors if e)  # no resolved path in any answer
    wrapper.limits = ServingLimits()  # no image directory: a name is refused outright, bytes still work
    out = wrapper.predict(pd.DataFrame({"text": ["a b", "a b"], "image": ["ok.png", buffer.getvalue()]}))
    assert "no image directory is configured" in out[0]["error"] and out[1]["error"] is None
