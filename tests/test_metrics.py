"""Metrics against hand-worked examples and against the reference implementations (seqeval, scikit-learn)."""

from __future__ import annotations

import ast
import random

import numpy as np
import pytest
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import precision_recall_fscore_support

from components.data.bio import bio_to_spans
from components.data.metrics import Scores, confusion_matrix
from components.data.records import Span
from components.tasks import get_task
from components.tasks.joint.records import Triple
from components.tasks.joint.task import triple_scores
from components.tasks.ner.records import NerExample
from components.tasks.ner.task import span_scores
from components.tasks.re.task import re_scores


def scores_from_tags(gold_tags, pred_tags) -> Scores:
    """BIO tag sequences scored by what evaluation calls, the NER task's `score`: gold as records, predictions as the
    (span, type, score) triples its decoder chunks from the tags it decodes (bio_to_spans, as CrfTagger.decode)."""
    examples = [
        NerExample(f"s{i}", f"img{i}", [f"w{j}" for j in range(len(tags))], list(tags))
        for i, tags in enumerate(gold_tags)
    ]
    predictions = [[(span, kind, 1.0) for kind, span in bio_to_spans(tags, i)] for i, tags in enumerate(pred_tags)]
    return get_task("ner").score(examples, predictions)


def test_length_mismatches_are_errors():
    with pytest.raises(ValueError, match="2 gold sentences/instances but 1 predicted"):
        span_scores([[], []], [[]])
    with pytest.raises(ValueError, match="re_scores"):
        re_scores(["a"], [])


# ---------------------------------------------------------------------------------------------------------------------
# MNER scores


def test_ner_scores_hand_worked():
    gold = [
        ["B-PER", "I-PER", "O", "B-LOC"],  # PER(0,2) LOC(3,4)
        ["O", "B-ORG", "I-ORG", "O"],  # ORG(1,3)
        ["B-PER", "O"],  # PER(0,1)
    ]
    pred = [
        ["B-PER", "I-PER", "O", "B-ORG"],  # PER(0,2) correct, ORG(3,4) wrong
        ["O", "I-ORG", "I-ORG", "O"],  # ORG(1,3): an I- start is a chunk, and correct
        ["B-PER", "B-PER"],  # PER(0,1) correct, PER(1,2) wrong
    ]
    scores = scores_from_tags(gold, pred)
    # gold 4, predicted 5, correct 3.
    assert (scores.correct, scores.predicted, scores.support) == (3, 5, 4)
    assert scores.precision == pytest.approx(3 / 5)
    assert scores.recall == pytest.approx(3 / 4)
    assert scores.f1 == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert scores.per_type["PER"].precision == pytest.approx(2 / 3)
    assert scores.per_type["PER"].recall == pytest.approx(1.0)
    assert scores.per_type["LOC"] == Scores.from_counts(0, 0, 1)
    assert scores.per_type["ORG"].precision == pytest.approx(1 / 2)
    assert scores.per_type["ORG"].recall == pytest.approx(1.0)
    # The same numbers as seqeval's defaults.
    assert scores.precision == pytest.approx(precision_score(gold, pred))
    assert scores.recall == pytest.approx(recall_score(gold, pred))
    assert scores.f1 == pytest.approx(f1_score(gold, pred))


def test_span_form_equals_tag_form():
    gold_tags = [["B-PER", "I-PER", "O", "B-LOC"], ["I-ORG", "O"]]
    pred_tags = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "O"]]
    from_tags = scores_from_tags(gold_tags, pred_tags)
    from_spans = span_scores(
        [{("PER", Span(0, 2)), ("LOC", Span(3, 4))}, [("ORG", Span(0, 1))]],
        [[("PER", Span(0, 1)), ("LOC", Span(3, 4))], {("ORG", Span(0, 1))}],
    )
    assert from_tags == from_spans
    assert (from_spans.correct, from_spans.predicted, from_spans.support) == (2, 3, 3)


def test_no_predictions_and_no_gold_give_zero_not_nan():
    scores = scores_from_tags([["B-PER"]], [["O"]])
    assert (scores.precision, scores.recall, scores.f1) == (0.0, 0.0, 0.0)
    empty = scores_from_tags([["O"]], [["O"]])
    assert (empty.precision, empty.recall, empty.f1, empty.support) == (0.0, 0.0, 0.0, 0)


def _read_conll_tags(path):
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("IMGID:"):
            continue
        if not line.strip():
            if current:
                sentences.append(current)
            current = []
            continue
        current.append(line.rsplit("\t", 1)[1])
    if current:
        sentences.append(current)
    return sentences


def _perturb(tags, rng, types, rate):
    """Boundary, type and prefix errors of the kinds a tagger makes, including I- starts and foreign types."""
    out = list(tags)
    for i in range(len(out)):
        if rng.random() >= rate:
            continue
        kind = rng.randrange(5)
        if kind == 0:
            out[i] = "O"
        elif kind == 1:
            out[i] = f"I-{rng.choice(types)}"  # an I- start or a type switch inside a chunk
        elif kind == 2:
            out[i] = f"B-{rng.choice(types)}"
        elif kind == 3 and out[i] != "O":
            out[i] = ("I-" if out[i].startswith("B-") else "B-") + out[i][2:]
        elif kind == 4:
            out[i] = "B-FOO"  # a type that gold never uses
    return out


@pytest.mark.parametrize("seed, rate", [(0, 0.05), (1, 0.15), (2, 0.4)])
def test_ner_scores_match_seqeval_on_real_twitter2017_test(data_dir, seed, rate):
    gold = _read_conll_tags(data_dir / "twitter2017" / "test.txt")
    assert len(gold) == 723
    rng = random.Random(seed)
    types = ["PER", "LOC", "ORG", "MISC"]
    pred = [_perturb(tags, rng, types, rate) for tags in gold]

    ours = scores_from_tags(gold, pred)
    assert ours.f1 < 1.0  # the perturbation did change something
    assert ours.precision == pytest.approx(precision_score(gold, pred), abs=1e-12)
    assert ours.recall == pytest.approx(recall_score(gold, pred), abs=1e-12)
    assert ours.f1 == pytest.approx(f1_score(gold, pred), abs=1e-12)
    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    per_type = {k: v for k, v in report.items() if not k.endswith(" avg")}
    assert set(per_type) == set(ours.per_type)
    for name, ref in per_type.items():
        mine = ours.per_type[name]
        assert mine.precision == pytest.approx(ref["precision"], abs=1e-12), name
        assert mine.recall == pytest.approx(ref["recall"], abs=1e-12), name
        assert mine.f1 == pytest.approx(ref["f1-score"], abs=1e-12), name
        assert mine.support == ref["support"], name


def test_gold_against_itself_is_perfect(data_dir):
    gold = _read_conll_tags(data_dir / "twitter2017" / "test.txt")
    scores = scores_from_tags(gold, gold)
    assert (scores.precision, scores.recall, scores.f1) == (1.0, 1.0, 1.0)
    assert scores.support == sum(len(get_entities(tags)) for tags in gold)
    assert set(scores.per_type) == {"PER", "LOC", "ORG", "MISC"}


def test_as_dict_names_and_table():
    scores = scores_from_tags([["B-PER", "O", "B-LOC"]], [["B-PER", "O", "O"]])
    flat = scores.as_dict("dev")
    assert flat["dev_f1"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert flat["dev_precision"] == 1.0 and flat["dev_recall"] == 0.5
    assert flat["dev_PER_f1"] == 1.0 and flat["dev_LOC_recall"] == 0.0
    assert flat["dev_support"] == 2.0 and flat["dev_LOC_support"] == 1.0
    assert "dev_accuracy" not in flat
    assert scores.as_dict()["f1"] == flat["dev_f1"]
    rows = scores.per_type_rows()
    assert [r["type"] for r in rows] == ["LOC", "PER", "micro"]
    assert rows[-1]["support"] == 2
    assert "micro" in scores.format_table()


# ---------------------------------------------------------------------------------------------------------------------
# MRE


def test_re_scores_hand_worked():
    gold = ["A", "None", "B", "A", "None"]
    pred = ["A", "A", "None", "B", "None"]
    scores = re_scores(gold, pred)
    # positives: predicted {0,1,3}, gold {0,2,3}, correct {0}.
    assert (scores.correct, scores.predicted, scores.support) == (1, 3, 3)
    assert scores.precision == pytest.approx(1 / 3)
    assert scores.recall == pytest.approx(1 / 3)
    assert scores.f1 == pytest.approx(1 / 3)
    assert scores.accuracy == pytest.approx(2 / 5)  # instances 0 and 4 (None == None counts for accuracy)
    assert "None" not in scores.per_type
    assert scores.per_type["A"].precision == pytest.approx(1 / 2)
    assert scores.per_type["A"].recall == pytest.approx(1 / 2)
    assert scores.per_type["B"] == Scores.from_counts(0, 1, 1)
    assert re_scores(["x", "no_rel"], ["no_rel", "no_rel"], none_label="no_rel").support == 1


def _mnre_labels(path):
    return [ast.literal_eval(line)["relation"] for line in path.read_text(encoding="utf-8").splitlines() if line]


def test_re_scores_and_confusion_match_sklearn_on_real_mnre_test(data_dir):
    gold = _mnre_labels(data_dir / "mnre" / "test.txt")
    assert len(gold) == 1614
    labels = sorted(set(gold))
    assert "None" in labels
    rng = random.Random(7)
    pred = [g if rng.random() < 0.6 else rng.choice(labels) for g in gold]

    ours = re_scores(gold, pred)
    positive = [label for label in labels if label != "None"]
    p, r, f, _ = precision_recall_fscore_support(gold, pred, labels=positive, average="micro", zero_division=0)
    assert (ours.precision, ours.recall, ours.f1) == pytest.approx((p, r, f), abs=1e-12)
    assert ours.accuracy == pytest.approx(np.mean([g == q for g, q in zip(gold, pred, strict=False)]))
    per_p, per_r, _, per_support = precision_recall_fscore_support(
        gold, pred, labels=positive, average=None, zero_division=0
    )
    for i, label in enumerate(positive):
        assert ours.per_type[label].precision == pytest.approx(per_p[i]), label
        assert ours.per_type[label].recall == pytest.approx(per_r[i]), label
        assert ours.per_type[label].support == per_support[i], label
    # Relation labels become flat MLflow names.
    assert "dev_per_loc_place_of_residence_f1" in ours.as_dict("dev")

    order, counts = confusion_matrix(gold, pred)
    assert order == labels
    np.testing.assert_array_equal(counts, sk_confusion_matrix(gold, pred, labels=labels))
    assert counts.sum() == len(gold)


def test_confusion_matrix_label_order_and_unknown_label():
    order, counts = confusion_matrix(["a", "b", "b"], ["b", "b", "a"], labels=["b", "a"])
    assert order == ["b", "a"]
    np.testing.assert_array_equal(counts, [[1, 1], [1, 0]])
    with pytest.raises(ValueError, match=r"\['c'\]"):
        confusion_matrix(["a"], ["c"], labels=["a"])


# ---------------------------------------------------------------------------------------------------------------------
# Joint triples


def test_triple_scores_hand_worked():
    t = Triple
    gold = [
        {t(Span(0, 2), "/per/per/peer", Span(4, 5)), t(Span(0, 2), "/per/loc/place_of_residence", Span(6, 8))},
        {t(Span(1, 2), "/per/per/peer", Span(3, 4))},
    ]
    pred = [
        {t(Span(0, 2), "/per/per/peer", Span(4, 5)), t(Span(0, 1), "/per/loc/place_of_residence", Span(6, 8))},
        {t(Span(3, 4), "/per/per/peer", Span(1, 2)), t(Span(1, 2), "/per/per/peer", Span(3, 4))},
    ]
    scores = triple_scores(gold, pred)
    # Exact matches only: a head off by one token or swapped head/tail is wrong.
    assert (scores.correct, scores.predicted, scores.support) == (2, 4, 3)
    assert scores.precision == pytest.approx(0.5)
    assert scores.recall == pytest.approx(2 / 3)
    assert scores.f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert scores.per_type["/per/per/peer"].recall == pytest.approx(1.0)
    assert scores.per_type["/per/loc/place_of_residence"].recall == 0.0
    with pytest.raises(ValueError, match="triple_scores"):
        triple_scores(gold, pred[:1])


def test_confusion_pairs_count_misses_and_false_positives_for_entities_and_triples():
    from components.tasks.joint.records import JointExample
    from components.tasks.ner.records import NerExample
    from components.training.evaluate import score_predictions

    ner = [NerExample("s-0", "i", ["a", "b", "c", "d"], ["B-PER", "I-PER", "O", "B-LOC"])]
    # PER right, LOC typed ORG, and a spurious PER on "c".
    predicted = [[(Span(0, 2), "PER", 0.9), (Span(3, 4), "ORG", 0.8), (Span(2, 3), "PER", 0.5)]]
    ev = score_predictions("ner", ner, predicted)
    assert sorted(zip(ev.confusion_gold, ev.confusion_pred, strict=False)) == [
        ("LOC", "ORG"),
        ("O", "PER"),
        ("PER", "PER"),
    ]

    t = Triple
    joint = [
        JointExample(
            "s-0",
            "i",
            list("abcdefgh"),
            [Span(0, 2), Span(4, 5), Span(6, 8)],
            [t(Span(0, 2), "/per/per/peer", Span(4, 5)), t(Span(0, 2), "/per/loc/place_of_residence", Span(6, 8))],
        )
    ]
    # The first pair right, the second missed, and a relation on a pair with no gold triple.
    predicted = [[(t(Span(0, 2), "/per/per/peer", Span(4, 5)), 0.9), (t(Span(4, 5), "/per/per/peer", Span(0, 2)), 0.6)]]
    ev = score_predictions("joint", joint, predicted)
    assert sorted(zip(ev.confusion_gold, ev.confusion_pred, strict=False)) == [
        ("/per/loc/place_of_residence", "None"),
        ("/per/per/peer", "/per/per/peer"),
        ("None", "/per/per/peer"),
    ]
    assert (ev.scores.correct, ev.scores.predicted, ev.scores.support) == (1, 2, 2)
