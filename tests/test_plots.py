"""The PNG figures: valid images of a size that follows the matrix, readable labels, clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from components.data.metrics import confusion_matrix
from components.tracking.plots import confusion_matrix_png, shapley_heatmap_png, truncate_label


def _pixels(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"), dtype=np.int64)


def test_truncate_label():
    assert truncate_label("short") == "short"
    assert truncate_label("a  multi\nline\tlabel") == "a multi line label"
    cut = truncate_label("x" * 100, max_chars=20)
    assert len(cut) == 20 and cut.endswith("…")


def test_confusion_matrix_png_small_and_large(tmp_path):
    labels, counts = confusion_matrix(["PER", "LOC", "LOC", "ORG"], ["PER", "LOC", "ORG", "ORG"])
    small = _pixels(confusion_matrix_png(labels, counts, tmp_path / "cm" / "small.png"))
    relations = [f"/per/loc/relation_number_{i}" for i in range(23)]
    rng = np.random.default_rng(0)
    large = _pixels(confusion_matrix_png(relations, rng.integers(0, 50, (23, 23)), tmp_path / "large.png"))
    # The figure grows with the label count, and it is not blank.
    assert large.shape[0] > small.shape[0] and large.shape[1] > small.shape[1]
    assert small.std() > 10 and large.std() > 10
    # Row normalisation: a gold row with all its mass on one cell draws the darkest blue.
    blues = large[..., 2] - large[..., 0]
    assert blues.max() > 100


def test_shapley_heatmap_png_reads_the_sign(tmp_path):
    texts = [f"tweet {i}: Rafael Nadal gets engaged to girlfriend of 14 years, Mery Perello" for i in range(6)]
    contexts = [f"context {i}: a man in a white shirt holding a tennis racket on a court" for i in range(6)]
    phi = np.full((6, 6), -0.2)
    np.fill_diagonal(phi, 0.8)  # own contexts help, the others hurt
    mixed = _pixels(shapley_heatmap_png(phi, contexts, texts, tmp_path / "phi.png"))
    positive = _pixels(shapley_heatmap_png(np.abs(phi), contexts, texts, tmp_path / "phi_pos.png"))

    # RdBu_r centred on 0: negative cells are blue, positive ones red. Only the colour bar is blue in the
    # all-positive map, so the 30 negative cells make the mixed map far bluer; the 6 positive cells are red in both.
    def blueness(px):
        return int(((px[..., 2] - px[..., 0]) > 30).sum())

    def redness(px):
        return int(((px[..., 0] - px[..., 2]) > 30).sum())

    assert blueness(mixed) > 5 * blueness(positive)
    assert redness(mixed) > 0 and redness(positive) > redness(mixed)
    # An all-zero matrix still gets a range (±1), so its cells sit in the map's white centre; a matrix of ones fills
    # the same cells with dark red. The colour bar is red in both, hence "far less", not "none".
    labels = (["c1", "c2"], ["t1", "t2", "t3"])
    zeros = _pixels(shapley_heatmap_png(np.zeros((2, 3)), *labels, tmp_path / "z.png"))
    ones = _pixels(shapley_heatmap_png(np.ones((2, 3)), *labels, tmp_path / "ones.png"))
    assert zeros.shape == ones.shape
    assert redness(ones) > 3 * redness(zeros)


def test_bad_matrices_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"shape \(2, 2\).*got \(3, 3\)"):
        confusion_matrix_png(["a", "b"], np.zeros((3, 3)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="NaN or infinite"):
        shapley_heatmap_png(np.array([[np.nan]]), ["c"], ["t"], tmp_path / "y.png")
    assert not (tmp_path / "x.png").exists()
