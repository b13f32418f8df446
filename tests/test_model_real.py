"""One real batch per head through the real pretrained MiniLM-L6 with the real BLIP-2 contexts: forward, backward,
predict. The published BLIP-2 contexts describe only the Twitter images, so MNRE batches run with closed context
gates and no alignment term (their context set is empty), which this test checks as well."""

from __future__ import annotations

import torch

from components.data.example_dataset import ExampleDataset
from components.data.records import Span
from components.datasets import DATASETS, labels, load_contexts, load_split
from components.model.shapca import ShapCA
from components.model.shapca_config import ShapCAConfig
from components.tasks.joint.records import Triple

torch.set_num_threads(2)
BATCH = 8


def _run(dataset: str, data_dir):
    examples = load_split(dataset, "train", data_dir, limit=BATCH)
    assert len(examples) == BATCH
    contexts = load_contexts("blip2", dataset, data_dir).contexts
    task = DATASETS[dataset].task
    torch.manual_seed(0)
    # The paper's Shap-CA on the real MiniLM: fusion, the cosine-of-sum Shapley game, the context encoder shared.
    config = ShapCAConfig(alignment="shapley", context_trainable_layers=None)
    model = ShapCA.from_config(config, task, labels(dataset)).train()
    batch = model.processor(ExampleDataset(examples, contexts))
    out = model(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    embeddings = model.text_encoder.get_input_embeddings().weight
    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0
    return model, batch, out, model.predict(batch)


def test_twitter2017_ner_batch(data_dir):
    model, batch, out, preds = _run("twitter2017", data_dir)
    assert batch.has_context.all()  # BLIP-2 describes every Twitter-2017 image
    assert out.shapley.shape == (BATCH, BATCH) and out.shapley.abs().sum() > 0
    assert out.align_ct.item() > 0 and out.context_gate.gt(0).any()
    assert model.alignment.proj_text.weight.grad.abs().sum() > 0
    assert len(preds) == BATCH
    assert all(isinstance(s, Span) and t in labels("twitter2017") for found in preds for s, t, _ in found)


def test_mnre_re_batch(data_dir):
    model, batch, out, preds = _run("mnre", data_dir)
    assert not batch.has_context.any()  # no published BLIP-2 context covers an MNRE image
    # No sample has a context: in training the context encoder still runs, and every context gate is closed.
    assert out.align_loss.item() == 0.0 and torch.equal(out.context_gate, torch.zeros_like(out.context_gate))
    assert [label in labels("mnre") for label, _ in preds] == [True] * BATCH


def test_mnre_joint_batch(data_dir):
    model, batch, out, preds = _run("mnre-joint", data_dir)
    pair_label = batch.labels["pair_label"]
    assert pair_label.numel() > 0 and (pair_label > 0).any()  # real gold triples reach the pair loss
    assert len(preds) == BATCH
    assert all(isinstance(t, Triple) and t.relation in labels("mnre-joint") for found in preds for t, _ in found)
