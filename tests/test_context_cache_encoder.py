"""model.context_trainable_layers = k: a context encoder copied from the text encoder, frozen below its top k layers,
with the frozen part's output cached per context (components/model/context_cache.py), on the suite's tiny 2-layer
random BERT."""

from __future__ import annotations

import pytest
import torch
from transformers import ViTConfig, ViTModel

from components.config import TrainConfig
from components.data.example_dataset import ExampleDataset
from components.model.context_cache import CachedContextEncoder
from components.model.encoders import mean_pool
from components.model.shapca import ShapCA
from components.model.shapca_config import ShapCAConfig
from components.tasks.ner.records import NerExample
from components.training.step import build_optimizer, build_scheduler, train_step

torch.set_num_threads(2)
TYPES = ["PER", "LOC", "ORG", "MISC"]
NER = [
    NerExample("a", "img0", ["Kawhi", "Leonard", "wins", "the", "fan", "vote"], ["B-PER", "I-PER", "O", "O", "O", "O"]),
    NerExample("b", "img1", ["Spurs", "play", "in", "San", "Antonio"], ["B-ORG", "O", "O", "B-LOC", "I-LOC"]),
    NerExample("c", "img2", ["Watching", "Star", "Wars", "again"], ["O", "B-MISC", "I-MISC", "O"]),
]
CONTEXTS = {
    "img0": "a basketball player holding a trophy",
    "img1": "a city street at night",
    "img2": "a crowd in an arena, cheering",
}  # three lengths: the batch pads two of them


def _model(tiny_bert_dir, **overrides) -> ShapCA:
    """A tiny NER model aligned by the paper's Shapley game; the tests set context_trainable_layers themselves."""
    torch.manual_seed(0)
    base = dict(text_encoder=str(tiny_bert_dir), alignment="shapley", align_dim=16, permutations=8)
    config = ShapCAConfig(**(base | overrides))
    return ShapCA.from_config(config, "ner", TYPES)


def _batch(model):
    return model.processor(ExampleDataset(NER, CONTEXTS))


@pytest.mark.parametrize("k", [0, 1])
def test_the_frozen_part_gets_no_gradient_and_no_optimizer_slot(tiny_bert_dir, k):
    model = _model(tiny_bert_dir, context_trainable_layers=k).train()
    context = model.context_encoder
    assert isinstance(context, CachedContextEncoder) and context.encoder is not model.text_encoder
    model(_batch(model)).loss.backward()
    top = {id(p) for layer in context.encoder.encoder.layer[2 - k :] for p in layer.parameters()}
    frozen = [p for p in context.parameters() if id(p) not in top]
    assert frozen and all(not p.requires_grad and p.grad is None for p in frozen)
    assert all(p.grad is not None for p in context.parameters() if id(p) in top)
    assert all(p.grad is not None for p in model.text_encoder.encoder.parameters())  # the text encoder trains whole
    optimized = {id(p) for group in build_optimizer(model, TrainConfig()).param_groups for p in group["params"]}
    assert not optimized & {id(p) for p in frozen}
    assert top <= optimized


@pytest.mark.parametrize("encoder", ["tiny_bert_dir", "tiny_mpnet_dir"])
@pytest.mark.parametrize("k", [0, 1, 2])
def test_cached_states_equal_the_uncached_frozen_forward_and_the_shared_encoder(request, encoder, k):
    """Run layer by layer (BERT; MPNet with its relative position bias), the split encoder computes what the whole
    encoder computes."""
    encoder_dir = request.getfixturevalue(encoder)
    shared = _model(encoder_dir).eval()
    model = _model(encoder_dir, context_trainable_layers=k).eval()
    batch = _batch(model)
    ids, mask = batch.context_input_ids, batch.context_attention_mask
    context = model.context_encoder
    cached, uncached = context.cached_states(ids, mask), context.frozen_states(ids, mask)
    valid = mask.bool()
    assert torch.allclose(cached[valid], uncached[valid], atol=1e-6, rtol=0)
    assert torch.allclose(context.cached_states(ids, mask), cached, atol=0, rtol=0)  # now from the cache
    # At initialisation the copy computes what the shared text encoder computes on the contexts.
    with torch.no_grad():
        expected = shared.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        got = context(ids, mask).last_hidden_state
        assert torch.allclose(mean_pool(got, mask), mean_pool(expected, mask), atol=1e-5, rtol=0)
        torch.manual_seed(3)  # the same Monte Carlo permutations
        loss = model(batch).loss
        torch.manual_seed(3)
        assert torch.allclose(loss, shared(batch).loss, atol=1e-5, rtol=0)


def test_the_second_pass_hits_the_cache(tiny_bert_dir):
    model = _model(tiny_bert_dir, context_trainable_layers=1).train()
    layers = model.context_encoder.encoder.encoder.layer
    calls = {0: 0, 1: 0}
    for i in calls:
        layers[i].register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    batch = _batch(model)
    model(batch).loss.backward()
    assert calls == {0: 1, 1: 1} and model.context_encoder.misses == 3
    model(batch).loss.backward()
    assert calls == {0: 1, 1: 2}  # the frozen layer did not run again; the trained top did
    assert (model.context_encoder.hits, len(model.context_encoder.cache)) == (3, 3)


def test_the_cache_is_bounded_and_inference_leaves_it_alone(tiny_bert_dir):
    model = _model(tiny_bert_dir, context_trainable_layers=0, context_cache_entries=2)
    batch = _batch(model)
    model.predict(batch)  # under inference_mode: nothing stored, or a later backward could not use it
    assert not model.context_encoder.cache
    model.train()
    model(batch).loss.backward()
    assert len(model.context_encoder.cache) == 2  # three contexts, two entries: the oldest went


@pytest.mark.parametrize("k", [0, 1])
def test_k0_and_k1_train_end_to_end(tiny_bert_dir, k):
    model = _model(tiny_bert_dir, context_trainable_layers=k, dropout=0.0).train()
    batch = _batch(model)
    train = TrainConfig(lr_encoder=1e-3, lr_head=1e-2, warmup_ratio=0.0, precision="fp32")
    optimizer = build_optimizer(model, train)  # the trainer's own step, optimizer and schedule
    scheduler = build_scheduler(optimizer, train, total_steps=30)
    losses = [train_step(model, batch, optimizer, scheduler, train).loss.item() for _ in range(15)]
    assert losses[-1] < 0.5 * losses[0]
    assert model.context_encoder.misses == 3  # the frozen part ran once per context, in the first step


def test_save_and_load_are_exact_inverses(tiny_bert_dir, tmp_path):
    model = _model(tiny_bert_dir, context_trainable_layers=1).train()
    batch = _batch(model)
    optimizer = build_optimizer(model, TrainConfig(lr_encoder=1e-2))
    model(batch).loss.backward()
    optimizer.step()  # the copy's top layer now differs from the text encoder's
    model.save_pretrained(tmp_path / "saved")
    loaded = ShapCA.from_pretrained(tmp_path / "saved")
    assert loaded.config == model.config and isinstance(loaded.context_encoder, CachedContextEncoder)
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())
    assert all(not p.requires_grad for p in loaded.context_encoder.encoder.embeddings.parameters())
    model.eval()
    torch.manual_seed(3)
    loss = model(batch).loss
    torch.manual_seed(3)
    assert torch.allclose(loss, loaded(batch).loss, atol=1e-6, rtol=0)
    assert model.predict(batch) == loaded.predict(batch)
    model.context_encoder.load_state_dict(model.context_encoder.state_dict())
    assert not model.context_encoder.cache  # new weights empty the cache


def test_without_a_layer_count_contexts_share_the_text_encoder(tiny_bert_dir):
    """context_trainable_layers=None (the paper's setup; the default recipe sets 1): no context encoder of its own,
    the context's pooled vector is the text encoder's own output on the context tokens."""
    model = _model(tiny_bert_dir, context_trainable_layers=None).eval()
    assert model.context_encoder is None
    batch = _batch(model)
    with torch.no_grad():
        states = model.text_encoder(
            input_ids=batch.context_input_ids, attention_mask=batch.context_attention_mask
        ).last_hidden_state
        assert torch.equal(model.encode(batch).context, mean_pool(states, batch.context_attention_mask))


def test_unsupported_choices_are_clear_errors(tiny_bert_dir):
    vit = ViTModel(ViTConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=2))
    with pytest.raises(
        ValueError, match=r"layers=1 needs an encoder whose layers run one by one \(bert, mpnet\), got 'vit'"
    ):
        CachedContextEncoder(vit, 1, 8)
    assert CachedContextEncoder(vit, 0, 8).split is None  # fully frozen works for any encoder
    with pytest.raises(ValueError, match="context_trainable_layers=3 exceeds the encoder's 2 layers"):
        _model(tiny_bert_dir, context_trainable_layers=3)
    # Only the fusion has a context encoder to split: the other modes ignore k (a default config may set it).
    for mode in ("concat", "none"):
        assert (
            _model(tiny_bert_dir, context_trainable_layers=0, context_mode=mode, alignment="none").context_encoder
            is None
        )


def test_the_pyfunc_serves_a_saved_cached_model(tiny_bert_dir, tmp_path):
    import pandas as pd

    from components.serving.pyfunc import ShapCAPyfunc

    model = _model(tiny_bert_dir, context_trainable_layers=1)
    model.save_pretrained(tmp_path / "saved")
    wrapper = ShapCAPyfunc()
    wrapper.model = ShapCA.from_pretrained(tmp_path / "saved")  # what load_context does with the artifact
    rows = pd.DataFrame({"text": [" ".join(ex.tokens) for ex in NER], "context": [CONTEXTS[ex.image_id] for ex in NER]})
    out = wrapper.predict(rows)
    assert [row["error"] for row in out] == [None] * 3
    assert wrapper.predict(rows) == out  # a second request computes the same (the cache is optional at inference)
