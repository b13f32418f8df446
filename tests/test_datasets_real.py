"""The four benchmarks as DVC materialises them: published counts, label sets, ids and contexts."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from components.data.bio import bio_tags
from components.datasets import DATASETS, SPLITS, labels, load_contexts, load_split
from components.tasks.ner.checks import bio_mentions

EXPECTED = {
    "twitter2015": {"train": 4000, "dev": 1000, "test": 3257},
    "twitter2017": {"train": 3373, "dev": 723, "test": 723},
    "mnre": {"train": 12247, "dev": 1624, "test": 1614},
    "mnre-joint": {"train": 7356, "dev": 931, "test": 914},  # MNRE instances grouped on (tokens, image id)
}


@pytest.fixture(scope="module")
def loaded(data_dir):
    return {name: {split: load_split(name, split, data_dir) for split in SPLITS} for name in DATASETS}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_published_counts(loaded, name):
    assert {split: len(examples) for split, examples in loaded[name].items()} == EXPECTED[name]
    assert DATASETS[name].sizes == EXPECTED[name]


@pytest.mark.parametrize("name", ["twitter2015", "twitter2017"])
def test_ner_tags_ids_and_i_starts(loaded, name):
    tags = Counter(t for examples in loaded[name].values() for e in examples for t in e.tags)
    assert set(tags) == set(bio_tags(labels(name)))  # every tag of the label set occurs, and no other
    for split, examples in loaded[name].items():
        assert [e.id for e in examples[:2]] == [f"{split}-0", f"{split}-1"]
        assert all(len(e.tokens) == len(e.tags) > 0 for e in examples)
    if name == "twitter2015":
        assert all(e.image_id.isdigit() for x in loaded[name].values() for e in x)
    else:
        assert all(re.fullmatch(r"\d\d_\d\d(_\d\d)?_\d+|O_\d+", e.image_id) for x in loaded[name].values() for e in x)
    # The originals hold BIO sequences that start with I-: read as they are, counted per split.
    i_starts = {s: sum(i for e in x for _, i in bio_mentions(e.tags)) for s, x in loaded[name].items()}
    expected = {"train": 186, "dev": 53, "test": 135} if name == "twitter2015" else {"train": 0, "dev": 0, "test": 0}
    assert i_starts == expected


def test_mnre_relations_and_image_ids(loaded):
    relations = Counter(e.relation for x in loaded["mnre"].values() for e in x)
    assert set(relations) == set(labels("mnre"))
    assert relations["None"] == 7744 + 1000 + 974
    image_ids = [e.image_id for x in loaded["mnre"].values() for e in x]
    assert all(not i.endswith(".jpg") and i.startswith("twitter_") for i in image_ids)


def test_mnre_joint_sentences_carry_all_instances(loaded):
    for split in SPLITS:
        instances, sentences = loaded["mnre"][split], loaded["mnre-joint"][split]
        related = sum(1 for e in instances if e.relation != "None")
        assert sum(len(s.triples) for s in sentences) == related  # no instance holds a duplicate triple
        assert len({s.id for s in sentences}) == len(sentences)
        assert {t.relation for s in sentences for t in s.triples} <= set(labels("mnre-joint"))
        assert all(set((t.head, t.tail)) <= set(s.entities) for s in sentences for t in s.triples)


def test_mnre_joint_ids_are_stable(data_dir, loaded):
    """A second read gives the same sentences under the same ids; a limit keeps the first ones."""
    assert load_split("mnre-joint", "test", data_dir) == loaded["mnre-joint"]["test"]
    assert load_split("mnre-joint", "test", data_dir, limit=10) == loaded["mnre-joint"]["test"][:10]


@pytest.mark.parametrize("name", ["twitter2015", "twitter2017"])
def test_published_contexts(data_dir, loaded, name):
    blip2 = load_contexts("blip2", name, data_dir)
    assert len(blip2.contexts) == {"twitter2015": 8288, "twitter2017": 4819}[name]
    for examples in loaded[name].values():
        assert blip2.coverage(e.image_id for e in examples) == 1.0
    owl = load_contexts("mplug-owl", name, data_dir)
    assert len(owl.contexts) == 9997
    share = owl.coverage(e.image_id for x in loaded[name].values() for e in x)
    assert {"twitter2015": 0.65, "twitter2017": 0.85}[name] < share < {"twitter2015": 0.75, "twitter2017": 0.92}[name]
    assert all(text.strip() == text and text for text in owl.contexts.values())
