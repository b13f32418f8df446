"""Word features (model.word_features, components/model/word_features.py) and the context gate's options, on the
suite's tiny random BERT (uncased WordPiece, as MiniLM): the case the tokenizer drops reaches the states the heads
read, in training and through the logged pyfunc; saved models round-trip; with every option off nothing changes."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
import torch

from components.config import TrainConfig
from components.data.example_dataset import ExampleDataset
from components.data.records import Span
from components.model.processor import ShapCAProcessor
from components.model.shapca import ShapCA
from components.model.shapca_config import ShapCAConfig
from components.model.word_features import SHAPES, word_bytes, word_shape
from components.serving.packaging import log_shapca_model
from components.tasks.joint.records import JointExample
from components.tasks.layers import word_states
from components.tasks.ner.records import NerExample
from components.tasks.re.records import ReExample
from components.tracking.mlflow_setup import setup_tracking
from components.training.step import build_optimizer

torch.set_num_threads(2)
TYPES = ["PER", "LOC"]
RELATIONS = ["None", "/per/loc/place_of_residence"]


def _config(bert, **overrides) -> ShapCAConfig:
    return ShapCAConfig(**{"text_encoder": str(bert), "align_dim": 16, "permutations": 4, **overrides})


def _ner(words: list[str], tags: list[str] | None = None, i: int = 0) -> NerExample:
    return NerExample(f"ex-{i}", f"img{i}", words, tags or ["O"] * len(words))


def _examples(task: str, first: str) -> list:
    """One example of `task` whose first word is `first` (an entity)."""
    words = [first, "lives", "in", "Paris"]
    if task == "ner":
        return [_ner(words, ["B-PER", "O", "O", "B-LOC"])]
    if task == "re":
        return [ReExample("ex-0", "img0", words, Span(0, 1), Span(3, 4), RELATIONS[1])]
    return [JointExample("ex-0", "img0", words, [Span(0, 1), Span(3, 4)], [])]


def _labels(task: str) -> list[str]:
    return {"ner": TYPES, "re": RELATIONS, "joint": RELATIONS[1:]}[task]


def _with_random_projection(model: ShapCA) -> ShapCA:
    """The projection starts at zero (a new model's states are the encoder's); a trained one is not."""
    torch.manual_seed(1)
    torch.nn.init.normal_(model.word_features.project.weight, std=0.5)
    return model.eval()


def test_word_shapes_and_bytes_keep_what_the_tokenizer_drops():
    assert [word_shape(w) for w in ["obama", "Obama", "OBAMA", "I", "iPhone", "@obama", "#NBA"]] == [
        "lower",
        "title",
        "upper",
        "single-upper",
        "mixed",
        "mention",
        "hashtag",
    ]
    assert [word_shape(w) for w in ["https://t.co/x", "2017", "G20", "...", "\U0001f600", "sooooo", "@", "#"]] == [
        "url",
        "number",
        "alnum-digits",
        "punctuation",
        "other",
        "elongated",
        "punctuation",
        "punctuation",
    ]
    assert set(map(word_shape, ["Obama", "obama", "OBAMA"])) <= set(SHAPES)
    assert word_bytes("Ab", 20) == [ord("A") + 1, ord("b") + 1]
    long = "https://t.co/abcdefghijklmnop"
    assert bytes(b - 1 for b in word_bytes(long, 20)) == b"https://t." + b"ghijklmnop"  # both ends survive
    assert word_bytes("\u00e9", 20) == word_bytes("e\u0301", 20) == [0xC3 + 1, 0xA9 + 1]  # NFC: one spelling


def test_case_changes_the_word_inputs_while_the_uncased_tokenizer_gives_identical_ids(tiny_bert_dir):
    model = ShapCA.from_config(_config(tiny_bert_dir, word_features="chars+shape"), "ner", TYPES)
    upper, lower = (model.processor([(_ner([w, "visits", "Paris"]), None, None)]) for w in ("Obama", "obama"))
    assert torch.equal(upper.input_ids, lower.input_ids)
    assert upper.word_chars.shape == (1, 3, 6)  # (B, W, L): L the longest word
    assert not torch.equal(upper.word_chars[0, 0], lower.word_chars[0, 0])
    assert torch.equal(upper.word_chars[0, 1:], lower.word_chars[0, 1:])
    assert upper.word_shapes[0].tolist()[:2] == [SHAPES.index("title"), SHAPES.index("lower")]
    assert lower.word_shapes[0, 0] == SHAPES.index("lower")


@pytest.mark.parametrize(
    ("task", "at", "kind"),
    [
        ("ner", "embeddings", "chars"),
        ("ner", "states", "chars"),
        ("ner", "embeddings", "shape"),
        ("re", "embeddings", "chars+shape"),
        ("joint", "states", "chars+shape"),
    ],
)
def test_a_words_case_changes_the_states_its_head_reads(tiny_bert_dir, task, at, kind):
    config = _config(tiny_bert_dir, word_features=kind, word_features_at=at, context_mode="none", alignment="none")
    model = _with_random_projection(ShapCA.from_config(config, task, _labels(task)))
    upper, lower = (model.processor(ExampleDataset(_examples(task, w), {})) for w in ("Obama", "obama"))
    assert torch.equal(upper.input_ids, lower.input_ids)
    states = [model.encode(b).fusion.states for b in (upper, lower)]  # (1, T, d)
    if task == "re":  # the head reads the states of its entity markers, which the encoder contextualised
        read = [
            s[0, [b.labels["head_marker"][0], b.labels["tail_marker"][0]]]
            for s, b in zip(states, (upper, lower), strict=True)
        ]
    else:
        read = [word_states(s, b.word_index)[0] for s, b in zip(states, (upper, lower), strict=True)]  # (W, d)
        if at == "states":  # only the changed word's own state moves
            assert torch.equal(read[0][1:], read[1][1:])
    assert not torch.allclose(read[0], read[1])


def test_the_same_model_without_word_features_is_the_same_text_only_model(tiny_bert_dir):
    """Off: no parameter, no batch tensor, no processor.json entry. On: every other layer draws the same initial
    weights (WordFeatures is built last) and the zero-initialised projection leaves the predictions as they were."""
    batch_items = [(_ner(["Obama", "visits", "Paris"]), "a man at a desk", None)]
    torch.manual_seed(0)
    off = ShapCA.from_config(_config(tiny_bert_dir, word_features="none"), "ner", TYPES).eval()
    torch.manual_seed(0)
    on = ShapCA.from_config(_config(tiny_bert_dir, word_features="chars+shape"), "ner", TYPES).eval()
    assert off.word_features is None and not any("word_features" in k for k in off.state_dict())
    extra = {k for k in on.state_dict() if k not in off.state_dict()}
    assert extra and all(k.startswith("word_features.") for k in extra)
    assert all(torch.equal(v, on.state_dict()[k]) for k, v in off.state_dict().items())
    off_batch, on_batch = off.processor(batch_items), on.processor(batch_items)
    assert off_batch.word_chars is None and off_batch.word_shapes is None
    assert torch.equal(off.encode(off_batch).fusion.states, on.encode(on_batch).fusion.states)
    assert off.predict(off_batch) == on.predict(on_batch)


def test_save_and_load_carry_the_word_features_and_refuse_another_alphabet(tiny_bert_dir, tmp_path):
    config = _config(tiny_bert_dir, word_features="chars+shape", word_features_at="states")
    model = _with_random_projection(ShapCA.from_config(config, "ner", TYPES))
    model.save_pretrained(tmp_path / "saved")
    meta = json.loads((tmp_path / "saved" / "processor.json").read_text())
    assert meta["word_features"] == {
        "kind": "chars+shape",
        "alphabet": "utf-8 bytes + 1, 0 = padding",
        "shapes": list(SHAPES),
        "max_word_bytes": 20,
    }
    loaded = ShapCA.from_pretrained(tmp_path / "saved")
    items = [(_ner(w.split()), None, None) for w in ("Obama visits Paris", "OBAMA visits PARIS", "@obama #paris")]
    batch, reloaded = model.processor(items), loaded.processor(items)
    assert torch.equal(batch.word_chars, reloaded.word_chars) and torch.equal(batch.word_shapes, reloaded.word_shapes)
    assert torch.equal(model(batch).logits, loaded(reloaded).logits)
    assert model.predict(batch) == loaded.predict(reloaded)

    (tmp_path / "saved" / "processor.json").write_text(
        json.dumps({**meta, "word_features": {**meta["word_features"], "shapes": ["lower", "upper"]}})
    )
    with pytest.raises(ValueError, match="processor.json: its word features were written with"):
        ShapCAProcessor.from_pretrained(tmp_path / "saved")


def _fit_case(model: ShapCA, steps: int = 60) -> ShapCA:
    """Train on the one thing the uncased tokenizer cannot see: `Tony` is a person, `tony` is not."""
    train = [
        _ner(["Tony", "spoke"], ["B-PER", "O"], 0),
        _ner(["tony", "spoke"], ["O", "O"], 1),
        _ner(["Paris", "spoke"], ["B-PER", "O"], 2),
        _ner(["paris", "spoke"], ["O", "O"], 3),
    ]
    batch = model.processor([(ex, None, None) for ex in train])
    optimizer = build_optimizer(model, TrainConfig(lr_encoder=1e-3, lr_head=1e-2, weight_decay=0.0))
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(batch).loss.backward()
        optimizer.step()
    return model.eval()


def test_the_logged_pyfunc_predicts_by_case_where_the_text_only_model_cannot(tiny_bert_dir, tmp_path):
    """Both models train on `Tony`/`tony` labelled apart. The one with word features, logged and loaded as consumers
    load it (the model's own code, from its artifact), tells them apart; the uncased one cannot."""
    models = {}
    for kind in ("chars", "none"):
        torch.manual_seed(0)
        config = _config(tiny_bert_dir, word_features=kind, context_mode="none", alignment="none", dropout=0.0)
        models[kind] = _fit_case(ShapCA.from_config(config, "ner", TYPES))
    items = [(_ner(text.split()), None, None) for text in ("Tony spoke", "tony spoke")]
    uncased = models["none"].predict(models["none"].processor(items))
    assert [[kind for _, kind, _ in sample] for sample in uncased] in ([["PER"], ["PER"]], [[], []])

    models["chars"].save_pretrained(tmp_path / "chars")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    setup = setup_tracking("word-features-tests", tracking_uri=uri)
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(experiment_id=setup.experiment_id):
        info = log_shapca_model(tmp_path / "chars", "ner")
    served = mlflow.pyfunc.load_model(info.model_uri).predict(pd.DataFrame({"text": ["Tony spoke", "tony spoke"]}))
    assert [[(e["start"], e["end"], e["type"]) for e in out["entities"]] for out in served] == [[(0, 1, "PER")], []]


def test_the_context_gate_floor_and_open_bias(tiny_bert_dir):
    items = [(_ner(["Obama", "visits", "Paris"]), "a man at a desk", None), (_ner(["hi"]), None, None)]
    torch.manual_seed(0)
    plain = ShapCA.from_config(_config(tiny_bert_dir), "ner", TYPES).eval()
    torch.manual_seed(0)
    floored = ShapCA.from_config(_config(tiny_bert_dir, context_gate_floor=0.4), "ner", TYPES).eval()
    torch.manual_seed(0)
    opened = ShapCA.from_config(_config(tiny_bert_dir, context_gate_bias=2.0), "ner", TYPES).eval()
    assert all(torch.equal(v, floored.state_dict()[k]) for k, v in plain.state_dict().items())
    bias = "fusion.context.gate.bias"
    assert all(torch.equal(v, opened.state_dict()[k]) for k, v in plain.state_dict().items() if k != bias)
    assert opened.state_dict()[bias].tolist() == [2.0]
    batch = plain.processor(items)
    gates = {name: m(batch).context_gate for name, m in (("plain", plain), ("floor", floored), ("open", opened))}
    real = batch.attention_mask[0].bool()
    assert torch.allclose(gates["floor"][0], 0.4 + 0.6 * gates["plain"][0])
    assert gates["floor"][0][real].min() >= 0.4 and torch.all(gates["open"][0][real] > gates["plain"][0][real])
    assert torch.all(gates["floor"][1] == 0) and torch.all(gates["open"][1] == 0)  # no context: still closed


def test_lr_fusion_gives_the_fusion_a_group_of_its_own(tiny_bert_dir):
    model = ShapCA.from_config(_config(tiny_bert_dir), "ner", TYPES)
    fusion = {id(p) for p in model.fusion.parameters()}
    default = build_optimizer(model, TrainConfig())
    assert [g["lr"] for g in default.param_groups] == [1e-4, 5e-3]
    split = build_optimizer(model, TrainConfig(lr_fusion=1e-3))
    assert [g["lr"] for g in split.param_groups] == [1e-4, 5e-3, 1e-3]
    assert {id(p) for p in split.param_groups[2]["params"]} == fusion
    assert not fusion & {id(p) for p in split.param_groups[1]["params"]}
    assert sum(len(g["params"]) for g in split.param_groups) == sum(len(g["params"]) for g in default.param_groups)


def test_lr_word_features_gives_the_word_features_a_group_of_their_own(tiny_bert_dir):
    model = ShapCA.from_config(_config(tiny_bert_dir, word_features="chars+shape"), "ner", TYPES)
    words = {id(p) for p in model.word_features.parameters()}
    fusion = {id(p) for p in model.fusion.parameters()}
    default = build_optimizer(model, TrainConfig())
    both = build_optimizer(model, TrainConfig(lr_fusion=1e-3, lr_word_features=1e-4))
    assert [g["lr"] for g in both.param_groups] == [1e-4, 5e-3, 1e-3, 1e-4]
    assert [{id(p) for p in g["params"]} for g in both.param_groups[2:]] == [fusion, words]
    assert not (words | fusion) & {id(p) for p in both.param_groups[1]["params"]}
    assert sum(len(g["params"]) for g in both.param_groups) == sum(len(g["params"]) for g in default.param_groups)


def test_relation_extraction_says_that_features_at_the_states_reach_nothing(tiny_bert_dir, caplog):
    """The default puts the character CNN at the states, which the RE head never reads (only its markers' states):
    a relation model built so says how to make the features count, and one at the embeddings does not."""
    with caplog.at_level("WARNING", logger="components.model.shapca"):
        ShapCA.from_config(_config(tiny_bert_dir), "re", RELATIONS)
    assert "set model.word_features_at=embeddings" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="components.model.shapca"):
        ShapCA.from_config(_config(tiny_bert_dir, word_features_at="embeddings"), "re", RELATIONS)
        ShapCA.from_config(_config(tiny_bert_dir), "ner", TYPES)
    assert "reaches nothing" not in caplog.text
