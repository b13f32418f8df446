"""ShapCA assembled on tiny random encoders (BERT, CLIP vision, ViT) saved with save_pretrained: every head trains and
predicts, the processor's tensors say what they should, and save/load round-trips without the encoder paths."""

from __future__ import annotations

import itertools
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from transformers import ViTConfig, ViTImageProcessor, ViTModel

from components.data.bio import bio_tags
from components.data.example_dataset import ExampleDataset
from components.data.records import Span
from components.model.encoders import resolve_encoder_path
from components.model.packaged_encoders import PACKAGED_ENCODERS, packaged_encoder_path, verify_sha256
from components.model.processor import ShapCAProcessor
from components.model.shapca import ShapCA, ShapCAOutput
from components.model.shapca_config import ShapCAConfig
from components.tasks.joint.records import JointExample, Triple
from components.tasks.layers import crf_marginals
from components.tasks.ner.records import NerExample
from components.tasks.re.records import ReExample
from components.tasks.re.task import ReTask

torch.set_num_threads(2)
NER_TYPES = ["PER", "LOC", "ORG", "MISC"]
RELATIONS = ["None", "/per/org/member_of", "/per/loc/place_of_residence"]


@pytest.fixture(scope="module")
def encoders(tmp_path_factory, tiny_bert_dir, tiny_clip_dir) -> dict[str, Path]:
    """Tiny random encoders: the suite's BERT and CLIP vision tower (conftest) and a ViT made here."""
    vit = tmp_path_factory.mktemp("tiny-vit")
    torch.manual_seed(0)
    ViTModel(
        ViTConfig(
            hidden_size=16,
            intermediate_size=24,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=16,
        )
    ).save_pretrained(vit)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(vit)
    return {"bert": tiny_bert_dir, "clip": tiny_clip_dir, "vit": vit}


def _config(encoders, **overrides) -> ShapCAConfig:
    """The tiny model these tests build: the paper's Shapley alignment (cosine-of-sum game, Monte Carlo), the context
    encoder shared with the text and trained whole, on the tiny BERT."""
    base = dict(
        text_encoder=str(encoders["bert"]),
        alignment="shapley",
        context_trainable_layers=None,
        align_dim=16,
        fusion_heads=4,
        dropout=0.1,
        permutations=8,
    )
    return ShapCAConfig(**{**base, **overrides})


NER = [
    NerExample(
        "train-0",
        "img0",
        ["Kawhi", "Leonard", "wins", "the", "fan", "vote", "\u200d"],
        ["B-PER", "I-PER", "O", "O", "O", "O", "O"],
    ),
    NerExample("train-1", "img1", ["Spurs", "play", "in", "San", "Antonio"], ["B-ORG", "O", "O", "B-LOC", "I-LOC"]),
    NerExample("train-2", "img2", ["#", "NBA", "final", "tonight"], ["O", "B-ORG", "O", "O"]),
    NerExample("train-3", "img3", ["Watching", "Star", "Wars", "again"], ["O", "B-MISC", "I-MISC", "O"]),
]
RE = [
    ReExample(
        "train-0",
        "img0",
        ["Kawhi", "Leonard", "plays", "for", "the", "Spurs"],
        Span(0, 2),
        Span(5, 6),
        "/per/org/member_of",
    ),
    ReExample(
        "train-1", "img1", ["Tony", "lives", "in", "Paris"], Span(0, 1), Span(3, 4), "/per/loc/place_of_residence"
    ),
    ReExample("train-2", "img2", ["Tony", "and", "Tim", "at", "the", "game"], Span(2, 3), Span(0, 1), "None"),
]
JOINT = [
    JointExample(
        "train-0",
        "img0",
        ["Kawhi", "Leonard", "plays", "for", "the", "Spurs", "in", "Texas"],
        [Span(0, 2), Span(5, 6), Span(7, 8)],
        [Triple(Span(0, 2), "/per/org/member_of", Span(5, 6))],
    ),
    JointExample(
        "train-1",
        "img1",
        ["Tony", "lives", "in", "Paris"],
        [Span(0, 1), Span(3, 4)],
        [Triple(Span(0, 1), "/per/loc/place_of_residence", Span(3, 4))],
    ),
    JointExample("train-2", "img2", ["Nothing", "to", "see"], [], []),
]
CONTEXTS = {
    "img0": "a basketball player holding a trophy",
    "img1": "a city street at night",
    "img2": "a crowd in an arena",
}
TASKS = {"ner": (NER_TYPES, NER), "re": (RELATIONS, RE), "joint": (RELATIONS[1:], JOINT)}


def _images(ids, seed=0) -> dict[str, Image.Image]:
    rng = np.random.default_rng(seed)
    return {i: Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for i in ids}


@pytest.mark.parametrize("task", ["ner", "re", "joint"])
def test_each_head_runs_forward_and_backward(encoders, task):
    labels, examples = TASKS[task]
    model = ShapCA.from_config(_config(encoders), task, labels).train()
    batch = model.processor(ExampleDataset(examples, CONTEXTS))
    out = model(batch)
    assert isinstance(out, ShapCAOutput) and torch.isfinite(out.loss)
    assert out.loss.item() == pytest.approx(out.task_loss.item() + out.align_loss.item(), rel=1e-6)
    assert out.align_loss.item() == pytest.approx(0.1 * out.align_ct.item() + 0.1 * out.align_ci.item(), rel=1e-6)
    assert out.shapley.shape == (len(examples), len(examples))
    out.loss.backward()
    groups = model.parameter_groups()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in groups["encoder"])
    assert all(p.grad is not None for p in model.head.parameters())
    assert model.alignment.proj_context.weight.grad.abs().sum() > 0


def test_predictions_have_the_promised_shapes(encoders):
    """Heads biased towards one answer (a tag, a relation) predict it everywhere, in the promised form: every word a
    PER entity, every instance the first relation, every ordered pair of entity words a triple."""
    ner = ShapCA.from_config(_config(encoders), "ner", NER_TYPES).train()
    with torch.no_grad():
        ner.head.tagger.emit.bias.copy_(10.0 * (torch.arange(len(ner.head.tagger.tags)) == 1))  # tag 1: B-PER
    preds = ner.predict(ner.processor(ExampleDataset(NER, CONTEXTS)))
    assert ner.training  # predict restores the training mode
    assert [[(s.start, s.end, kind) for s, kind, _ in found] for found in preds] == [
        [(i, i + 1, "PER") for i in range(len(example.tokens))] for example in NER
    ]
    assert all(isinstance(s, Span) and 0.5 < score <= 1.0 for found in preds for s, _, score in found)

    re_model = ShapCA.from_config(_config(encoders), "re", RELATIONS)
    with torch.no_grad():
        re_model.head.classify.bias.copy_(10.0 * (torch.arange(len(RELATIONS)) == 1))
    preds = re_model.predict(re_model.processor(ExampleDataset(RE, CONTEXTS)))
    assert [label for label, _ in preds] == [RELATIONS[1]] * len(RE)
    assert all(0.9 < score <= 1.0 for _, score in preds)

    joint = ShapCA.from_config(_config(encoders), "joint", RELATIONS[1:])
    with torch.no_grad():
        joint.head.tagger.emit.bias.copy_(10.0 * (torch.arange(3) == 1))  # B-ENT: every word an entity
        joint.head.pair[-1].bias.copy_(10.0 * (torch.arange(len(RELATIONS)) == 1))  # class 1: the first relation
    preds = joint.predict(joint.processor(ExampleDataset(JOINT, CONTEXTS)))
    for example, found in zip(JOINT, preds, strict=True):
        words = [Span(i, i + 1) for i in range(len(example.tokens))]
        assert {triple for triple, _ in found} == {Triple(h, RELATIONS[1], t) for h in words for t in words if h != t}
        assert all(0.5 < score <= 1.0 for _, score in found)


def test_a_few_steps_fit_a_tiny_batch(encoders):
    """The whole model learns: 30 AdamW steps on three RE examples bring the loss down and the predictions right."""
    torch.manual_seed(0)
    model = ShapCA.from_config(_config(encoders, dropout=0.0), "re", RELATIONS).train()
    batch = model.processor(ExampleDataset(RE, CONTEXTS))
    groups = model.parameter_groups()
    optimizer = torch.optim.AdamW([{"params": groups["encoder"], "lr": 1e-3}, {"params": groups["other"], "lr": 1e-2}])
    first = model(batch).task_loss.item()
    for _ in range(30):
        optimizer.zero_grad()
        model(batch).loss.backward()
        optimizer.step()
    assert model(batch).task_loss.item() < 0.2 * first
    assert [label for label, _ in model.predict(batch)] == [ex.relation for ex in RE]


@pytest.mark.parametrize("task", ["ner", "re", "joint"])
def test_save_and_load_are_exact_inverses_without_the_encoder_paths(encoders, tmp_path, task):
    labels, examples = TASKS[task]
    bert = Path(shutil.copytree(encoders["bert"], tmp_path / "bert-copy"))
    clip = Path(shutil.copytree(encoders["clip"], tmp_path / "clip-copy"))
    head = {"pair_hidden": 24} if task == "joint" else {}  # a head setting other than its default travels too
    config = _config(encoders, text_encoder=str(bert), image_encoder=clip, head=head)
    model = ShapCA.from_config(config, task, labels)
    model.save_pretrained(tmp_path / "saved")
    shutil.rmtree(bert)  # the original encoders are gone
    shutil.rmtree(clip)
    loaded = ShapCA.from_pretrained(tmp_path / "saved")
    assert (loaded.task, loaded.labels, loaded.config) == (task, labels, model.config)
    expected = model.state_dict()
    assert loaded.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())
    images = _images(["img0", "img2"])
    batch = model.processor(ExampleDataset(examples, CONTEXTS, images))
    reloaded_batch = loaded.processor(ExampleDataset(examples, CONTEXTS, images))
    assert torch.equal(batch.input_ids, reloaded_batch.input_ids)  # the saved tokenizer (with markers) is the same
    model.eval()
    torch.manual_seed(3)
    out = model(batch)
    torch.manual_seed(3)
    out_loaded = loaded(reloaded_batch)
    assert out.loss.item() == out_loaded.loss.item()
    assert model.predict(batch) == loaded.predict(reloaded_batch)
    assert {p.name for p in (tmp_path / "saved").iterdir()} >= {
        "config.json",
        "processor.json",
        "model.safetensors",
        "text_encoder",
        "image_encoder",
    }
    # The processor on its own: save and load are exact inverses, and its label ids are the head's.
    model.processor.save_pretrained(tmp_path / "processor")
    processor = ShapCAProcessor.from_pretrained(tmp_path / "processor")
    assert (processor.task, processor.labels, processor.label_ids) == (task, labels, model.processor.label_ids)
    assert torch.equal(processor(ExampleDataset(examples, CONTEXTS, images)).input_ids, batch.input_ids)
    if task != "re":
        assert model.head.tagger.tags == list(processor.label_ids["tags"])
    if task == "joint":
        assert loaded.config.head == {"pair_hidden": 24} and loaded.head.pair[0].out_features == 24


def test_a_processor_file_whose_label_ids_disagree_with_its_head_is_refused(encoders, tmp_path):
    model = ShapCA.from_config(_config(encoders), "ner", NER_TYPES)
    model.processor.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / "processor.json").read_text())
    tags = list(meta["label_ids"]["tags"])
    meta["label_ids"]["tags"] = dict(zip(tags, reversed(range(len(tags))), strict=False))  # the same tags, other ids
    (tmp_path / "processor.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="label ids"):
        ShapCAProcessor.from_pretrained(tmp_path)


@pytest.mark.parametrize("task", ["ner", "joint"])
def test_a_directory_saved_before_the_head_settings_moved_still_loads(encoders, tmp_path, task):
    """format_version 2 (models registered before components/tasks/): the model section of config.json held the joint
    head's pair_hidden beside the model's settings; it loads, the setting now in `model.head` (and dropped for a head
    that has no such setting)."""
    labels, examples = TASKS[task]
    head = {"pair_hidden": 24} if task == "joint" else {}
    model = ShapCA.from_config(_config(encoders, head=head), task, labels).eval()
    model.save_pretrained(tmp_path / "saved")
    config = tmp_path / "saved" / "config.json"
    meta = json.loads(config.read_text())
    old_section = {k: v for k, v in meta["model"].items() if k != "head"} | {"pair_hidden": 24}
    config.write_text(json.dumps({**meta, "format_version": 2, "model": old_section}))
    loaded = ShapCA.from_pretrained(tmp_path / "saved")
    assert loaded.config == model.config and loaded.config.head == head
    assert loaded.predict(loaded.processor(ExampleDataset(examples, CONTEXTS))) == model.predict(
        model.processor(ExampleDataset(examples, CONTEXTS))
    )
    processor_file = tmp_path / "saved" / "processor.json"
    processor_meta = json.loads(processor_file.read_text())
    processor_file.write_text(json.dumps({**processor_meta, "max_context_tokens": 7}))
    config.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="max_context_tokens: model 96, processor 7"):
        ShapCA.from_pretrained(tmp_path / "saved")  # the window is in both files: they must agree
    config.write_text(json.dumps({**meta, "format_version": 1}))
    with pytest.raises(ValueError, match="expected format 'shapca' version 3, got 'shapca' version 1"):
        ShapCA.from_pretrained(tmp_path / "saved")


def test_a_head_setting_the_task_does_not_have_is_refused(encoders):
    with pytest.raises(ValueError, match=r"model.head: not a setting of the ner head \(its settings: none\)"):
        ShapCA.from_config(_config(encoders, head={"pair_hidden": 24}), "ner", NER_TYPES)


def test_parameter_groups_split_encoders_from_the_rest(encoders):
    model = ShapCA.from_config(_config(encoders, image_encoder=encoders["vit"]), "ner", NER_TYPES)
    groups = model.parameter_groups()
    encoder_ids = {id(p) for m in (model.text_encoder, model.image_encoder) for p in m.parameters()}
    assert {id(p) for p in groups["encoder"]} == encoder_ids
    assert {id(p) for p in groups["other"]} == {id(p) for p in model.parameters()} - encoder_ids
    assert len(groups["encoder"]) + len(groups["other"]) == len(list(model.parameters()))
    assert any(p is model.head.tagger.crf.transitions for p in groups["other"])


@pytest.mark.parametrize("image_encoder", ["clip", "vit"])
def test_image_encoder_with_synthetic_images(encoders, image_encoder):
    model = ShapCA.from_config(_config(encoders, image_encoder=encoders[image_encoder]), "ner", NER_TYPES)
    images = _images(["img0", "img1", "img3"])  # img2 has no image
    batch = model.processor(ExampleDataset(NER, CONTEXTS, images))
    assert batch.pixel_values.shape == (4, 3, 32, 32)
    assert batch.has_image.tolist() == [True, True, False, True]
    assert torch.equal(batch.pixel_values[2], torch.zeros(3, 32, 32))
    out = model(batch)
    assert out.image_gate.shape == batch.input_ids.shape
    assert torch.equal(out.image_gate[2], torch.zeros(batch.input_ids.shape[1]))  # no image: gate closed
    assert (out.image_gate[0] > 0).all()
    assert out.align_ci.item() > 0  # context-image alignment over the samples with both
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.image_encoder.parameters())


def test_missing_contexts_close_the_gate_and_leave_the_alignment(encoders):
    model = ShapCA.from_config(_config(encoders), "ner", NER_TYPES).eval()
    contexts = {"img0": CONTEXTS["img0"], "img1": "   ", "img3": "a poster of a film"}  # img1 empty, img2 missing
    batch = model.processor(ExampleDataset(NER, contexts))
    assert batch.has_context.tolist() == [True, False, False, True]
    out = model(batch)
    assert torch.equal(out.context_gate[1], torch.zeros_like(out.context_gate[1]))
    assert (out.context_gate[0][batch.attention_mask[0].bool()] > 0).all()
    assert torch.allclose(out.shapley[1:3], torch.zeros(2, 4), atol=1e-6)  # null players
    no_contexts = model(model.processor(ExampleDataset(NER)))
    assert no_contexts.align_loss.item() == 0.0 and torch.isfinite(no_contexts.loss)


def test_a_batch_without_any_context_skips_the_context_encoder_and_predicts_the_same(encoders):
    model = ShapCA.from_config(_config(encoders), "ner", NER_TYPES).eval()
    calls = []
    model.text_encoder.register_forward_hook(lambda *_: calls.append(1))  # contexts share the text encoder here
    none = model.processor(ExampleDataset(NER))
    one = model.processor(ExampleDataset(NER, {"img0": CONTEXTS["img0"]}))  # only the first sample has a context
    assert model.predict(none) and len(calls) == 1  # the text only
    calls.clear()
    with_context = model.predict(one)
    assert len(calls) == 2  # text and contexts
    # Samples without a context have a closed gate, so skipping the encoder changes nothing for them.
    assert model.predict(none)[1:] == with_context[1:]
    calls.clear()
    model.train()(none)  # training always runs it: dropout draws and gradients do not depend on the batch's contexts
    assert len(calls) == 2


@pytest.mark.parametrize(
    "overrides",
    [
        dict(context_mode="concat"),
        dict(context_mode="none", alignment="none"),
        dict(alignment="infonce"),
        dict(estimator="exact"),
        dict(context_mode="fusion", alignment="none"),
    ],
)
def test_ablation_switches(encoders, overrides):
    model = ShapCA.from_config(_config(encoders, **overrides), "joint", RELATIONS[1:])
    batch = model.processor(ExampleDataset(JOINT, CONTEXTS))
    out = model(batch)
    out.loss.backward()
    alignment = overrides.get("alignment", "shapley")
    assert (out.shapley is not None) == (alignment == "shapley")
    assert (out.align_ct is not None) == (alignment != "none")
    if overrides.get("context_mode") == "concat":
        assert batch.context_input_ids is None and batch.context_segment_mask.any(dim=1).all()
        assert not (batch.context_segment_mask & batch.text_mask).any()
        assert out.context_gate is None  # no cross-attention in concat mode
    if overrides.get("context_mode") == "none":
        assert model.fusion is None and not batch.has_context.any()
        assert torch.equal(out.loss, out.task_loss)


def test_alignment_without_contexts_is_a_config_error():
    with pytest.raises(ValueError, match="set model.alignment=none too"):
        ShapCAConfig(context_mode="none", alignment="shapley")


def test_processor_marks_entities_and_keeps_every_word(encoders):
    model = ShapCA.from_config(_config(encoders), "re", RELATIONS)
    batch = model.processor(ExampleDataset(RE, CONTEXTS))
    head_id, tail_id = model.tokenizer.convert_tokens_to_ids([ReTask.HEAD_START, ReTask.TAIL_START])
    rows = torch.arange(len(RE))
    assert set(batch.labels) == {"head_marker", "tail_marker", "relation"}
    assert (batch.input_ids[rows, batch.labels["head_marker"]] == head_id).all()
    assert (batch.input_ids[rows, batch.labels["tail_marker"]] == tail_id).all()
    assert batch.labels["relation"].tolist() == [RELATIONS.index(ex.relation) for ex in RE]
    assert model.text_encoder.get_input_embeddings().num_embeddings == len(model.tokenizer)

    ner = ShapCA.from_config(_config(encoders), "ner", NER_TYPES)
    batch = ner.processor(ExampleDataset(NER))
    assert batch.word_mask[0].sum() == 7  # the zero-width joiner keeps a state of its own
    tags = bio_tags(NER_TYPES)
    assert [tags[i] for i in batch.labels["tags"][1, :5].tolist()] == NER[1].tags
    first_pieces = batch.input_ids[0, batch.word_index[0, :2]]
    assert ner.tokenizer.convert_ids_to_tokens(first_pieces.tolist()) == ["ka", "leonard"]


def test_processor_builds_gold_entity_pairs(encoders):
    model = ShapCA.from_config(_config(encoders), "joint", RELATIONS[1:])
    batch = model.processor(ExampleDataset(JOINT))
    pairs = {
        (b, tuple(h), tuple(t)): label
        for b, h, t, label in zip(
            batch.labels["pair_sample"].tolist(),
            batch.labels["pair_head"].tolist(),
            batch.labels["pair_tail"].tolist(),
            batch.labels["pair_label"].tolist(),
            strict=False,
        )
    }
    assert len(pairs) == 3 * 2 + 2 * 1  # ordered pairs of distinct entities: 3 in sentence 0, 2 in sentence 1
    classes = ["None", *RELATIONS[1:]]
    assert classes[pairs[(0, (0, 2), (5, 6))]] == "/per/org/member_of"
    assert pairs[(0, (5, 6), (0, 2))] == 0 and pairs[(0, (0, 2), (7, 8))] == 0
    assert classes[pairs[(1, (0, 1), (3, 4))]] == "/per/loc/place_of_residence"
    assert batch.labels["tags"][0, :8].tolist() == [1, 2, 0, 0, 0, 1, 0, 1]  # B I O O O B O B


def test_the_processor_is_a_dataloaders_collate_function(encoders):
    model = ShapCA.from_config(_config(encoders), "ner", NER_TYPES)
    loader = DataLoader(ExampleDataset(NER, CONTEXTS), batch_size=2, collate_fn=model.processor)
    batches = list(loader)
    assert [len(b) for b in batches] == [2, 2] and batches[0].example_ids == ["train-0", "train-1"]
    assert batches[1].has_context.tolist() == [True, False]  # img3 has no context
    assert batches[0].to("cpu").input_ids.data_ptr() == batches[0].input_ids.data_ptr()


def test_processor_rejects_bad_records_by_id(encoders):
    ner = ShapCA.from_config(_config(encoders), "ner", NER_TYPES)
    bad_tag = NerExample("dev-7", "img0", ["a", "b"], ["O", "B-ANIMAL"])
    with pytest.raises(ValueError, match=r"example dev-7: tag 'B-ANIMAL' at token 1"):
        ner.processor(ExampleDataset([bad_tag]))
    re_model = ShapCA.from_config(_config(encoders), "re", RELATIONS)
    with pytest.raises(ValueError, match=r"example dev-8: relation '/x/y' is not one of"):
        re_model.processor(ExampleDataset([ReExample("dev-8", "i", ["a", "b"], Span(0, 1), Span(1, 2), "/x/y")]))
    with pytest.raises(ValueError, match=r"example dev-9: head Span\(start=1, end=5\)"):
        re_model.processor(ExampleDataset([ReExample("dev-9", "i", ["a", "b"], Span(1, 5), Span(0, 1), "None")]))
    with pytest.raises(ValueError, match="without 'None'"):
        ShapCA.from_config(_config(encoders), "joint", RELATIONS)


def test_words_beyond_the_window_are_reported(encoders):
    model = ShapCA.from_config(_config(encoders, max_text_tokens=8), "ner", NER_TYPES)
    long = NerExample("test-3", "img0", ["word"] * 12, ["O"] * 12)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = model.processor(ExampleDataset([long]))
    assert any("example test-3: its last 6 words fall beyond" in str(w.message) for w in caught)
    assert batch.word_mask.sum() == 6
    assert model.predict(batch)[0] == [] or all(s.end <= 6 for s, _, _ in model.predict(batch)[0])


def test_crf_marginals_match_enumeration():
    from torchcrf import CRF

    torch.manual_seed(0)
    crf = CRF(3, batch_first=True)
    torch.nn.init.normal_(crf.transitions), torch.nn.init.normal_(crf.start_transitions)
    torch.nn.init.normal_(crf.end_transitions)
    emissions = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    marginals = crf_marginals(crf, emissions, mask)
    for b, length in enumerate([4, 2]):
        expected = torch.zeros(length, 3)
        paths = list(itertools.product(range(3), repeat=length))
        scores = []
        for path in paths:
            s = crf.start_transitions[path[0]] + crf.end_transitions[path[-1]]
            s = s + sum(emissions[b, t, path[t]] for t in range(length))
            s = s + sum(crf.transitions[path[t - 1], path[t]] for t in range(1, length))
            scores.append(s)
        probs = torch.stack(scores).softmax(0)
        for path, p in zip(paths, probs, strict=False):
            for t in range(length):
                expected[t, path[t]] += p
        torch.testing.assert_close(marginals[b, :length].detach(), expected.detach(), rtol=1e-5, atol=1e-6)


def test_encoders_load_only_from_local_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a local directory; encoders load from disk only"):
        resolve_encoder_path("bert-base-uncased", "text_encoder")
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(b"not the weights")
    minilm_sha256 = PACKAGED_ENCODERS["minilm"].weights_sha256
    with pytest.raises(ValueError, match=f"sha256 is [0-9a-f]{{64}}, expected {minilm_sha256}"):
        verify_sha256(fake, minilm_sha256)
    assert resolve_encoder_path("minilm") == packaged_encoder_path("minilm")  # the packaged weights pass the check


@pytest.mark.parametrize("coverage", ["pooled", "maxsim"])
@pytest.mark.parametrize("context_mode", ["fusion", "concat"])
def test_token_coverage_game_trains_end_to_end(encoders, coverage, context_mode):
    """model.shapley_game=token_coverage on the tiny BERT (and CLIP for images): the alignment reads token states
    without padding and special tokens, and its loss sends gradients into the encoders and every projection."""
    images = context_mode == "fusion"  # images with the fusion model; the concat model reads text and context only
    config = _config(
        encoders,
        shapley_game="token_coverage",
        coverage_scores=coverage,
        context_mode=context_mode,
        image_encoder=encoders["clip"] if images else None,
    )
    model = ShapCA.from_config(config, "ner", NER_TYPES).train()
    contexts = {"img0": CONTEXTS["img0"], "img1": CONTEXTS["img1"], "img3": "a poster of a film"}  # img2: none
    batch = model.processor(ExampleDataset(NER, contexts, _images(["img0", "img1", "img3"]) if images else None))
    encoded = model.encode(batch)
    special = torch.tensor([model.tokenizer.cls_token_id, model.tokenizer.sep_token_id, model.tokenizer.pad_token_id])
    text_tokens = encoded.text_tokens
    assert torch.equal(text_tokens.mask, batch.text_mask & ~torch.isin(batch.input_ids, special))
    assert (text_tokens.mask.sum(dim=1) > 0).all()
    if context_mode == "fusion":
        real = batch.context_attention_mask.bool() & ~torch.isin(batch.context_input_ids, special)
        assert torch.equal(encoded.context_tokens.mask, real)
        patches = encoded.image_tokens
        assert patches.states.shape[:2] == patches.mask.shape and patches.mask.all()
    else:
        real = batch.context_segment_mask & ~torch.isin(batch.input_ids, special)
        assert torch.equal(encoded.context_tokens.mask, real)
        assert encoded.context_tokens.mask[[0, 1, 3]].any(dim=1).all() and not encoded.context_tokens.mask[2].any()
    out = model(batch)
    assert torch.isfinite(out.loss) and out.align_ct.item() > 0
    assert torch.equal(out.shapley[2], torch.zeros(4)) and torch.equal(out.shapley[:, 2], torch.zeros(4))  # no context
    kept = out.shapley[[0, 1, 3]][:, [0, 1, 3]]
    assert kept.abs().sum() > 0
    if images:
        assert out.align_ci.item() > 0
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.text_encoder.parameters())
    projections = ["proj_text", "proj_context"] + (["proj_image"] if images else [])
    assert all(getattr(model.alignment, p).weight.grad.abs().sum() > 0 for p in projections)
    if images:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.image_encoder.parameters())


def test_cosine_of_sum_stays_the_default_and_reads_no_token_states(encoders):
    model = ShapCA.from_config(_config(encoders), "ner", NER_TYPES)
    assert model.config.shapley_game == "cosine_of_sum" and not model.alignment.uses_tokens
    encoded = model.encode(model.processor(ExampleDataset(NER, CONTEXTS)))
    assert encoded.text_tokens is None and encoded.context_tokens is None
