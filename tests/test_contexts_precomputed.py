"""The precomputed backend on the real published files: importing BLIP-2 and mPLUG-Owl for both Twitter sets gives the
coverage the datasets README states, publishes readable context sets, and a rerun is all cache hits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from components.contexts import read_context_set
from components.contexts.settings import ContextsConfig
from components.contexts.steps import list_image_ids, report_text, run_contexts
from components.data.records import DataFormatError
from components.datasets import load_contexts

# From shared/datasets/README.md: BLIP-2 covers every tweet of both sets; mPLUG-Owl about 70% of Twitter-2015 and
# 88% of Twitter-2017.
README_COVERAGE = {
    ("twitter2015", "blip2"): (1.0, 1.0),
    ("twitter2017", "blip2"): (1.0, 1.0),
    ("twitter2015", "mplug-owl"): (0.68, 0.72),
    ("twitter2017", "mplug-owl"): (0.87, 0.89),
}


@pytest.fixture(scope="module")
def imported(tmp_path_factory, data_dir: Path):
    """All four imports into one cache, then all four again."""
    cache_dir = tmp_path_factory.mktemp("contexts-cache")
    first, second = {}, {}
    for dataset, generator in README_COVERAGE:
        cfg = ContextsConfig(dataset=dataset, generator=generator, data_dir=data_dir, cache_dir=cache_dir)
        first[dataset, generator] = run_contexts(cfg, progress=False)
    for dataset, generator in README_COVERAGE:
        cfg = ContextsConfig(dataset=dataset, generator=generator, data_dir=data_dir, cache_dir=cache_dir)
        second[dataset, generator] = run_contexts(cfg, progress=False)
    return cache_dir, first, second


@pytest.mark.parametrize("dataset,generator", list(README_COVERAGE))
def test_coverage_matches_the_readme(imported, data_dir: Path, dataset: str, generator: str):
    _, first, _ = imported
    report, published = first[dataset, generator]
    coverage = published.manifest["coverage"]
    assert set(coverage) == {"train", "dev", "test"}
    tweets = sum(c["tweets"] for c in coverage.values())
    with_context = sum(c["with_context"] for c in coverage.values())
    low, high = README_COVERAGE[dataset, generator]
    assert low <= with_context / tweets <= high, (dataset, generator, with_context / tweets)
    if generator == "blip2":
        assert all(c["coverage"] == 1.0 for c in coverage.values())
        assert report.failures == []
    else:
        # Every uncovered image is recorded as a failure with its reason, none silently dropped.
        split_ids = list_image_ids(ContextsConfig(dataset=dataset, data_dir=data_dir))
        distinct = {i for ids in split_ids.values() for i in ids}
        assert len(report.failures) + len(report.contexts) == len(distinct)
        assert {f.reason.split(":")[0] for f in report.failures} == {"not in source"}

    # The published set is exactly the source's contexts for this dataset's images, and reads back with its hash.
    source = load_contexts(generator, dataset, data_dir)
    back = read_context_set(published.path)
    assert back.contexts == {i: t for i, t in source.contexts.items() if i in back.contexts}
    assert back.content_hash() == published.content_hash == published.manifest["content_hash"]
    assert published.path.name == f"{dataset}-{generator}.jsonl"


@pytest.mark.parametrize("dataset,generator", list(README_COVERAGE))
def test_rerun_is_all_cache_hits(imported, dataset: str, generator: str):
    _, first, second = imported
    report1, published1 = first[dataset, generator]
    report2, published2 = second[dataset, generator]
    assert report2.misses == 0 and report2.reused == 0
    assert report2.hits == len(report1.contexts)
    assert published2.content_hash == published1.content_hash
    assert "(nothing to generate)" in report_text(published2)
    assert report2.seconds < 10


def test_mplug_owl_images_are_shared_between_datasets(imported):
    """mPLUG-Owl's files are one set for both Twitter datasets: its records are keyed once, whichever imported them."""
    cache_dir, first, _ = imported
    records = list((cache_dir / "records").glob("*/*.json"))
    expected = sum(len(first[key][0].contexts) for key in README_COVERAGE)
    assert len(records) == expected  # the Twitter-2015 and -2017 image ids do not overlap: no record twice
    sample = json.loads(records[0].read_text())
    assert set(sample["input"]) == {"image_id", "source_sha256"}


def test_changed_source_is_reimported_and_broken_source_stops(tmp_path: Path, data_dir: Path):
    data = tmp_path / "data"
    (data / "contexts" / "blip2").mkdir(parents=True)
    shutil.copytree(data_dir / "twitter2017", data / "twitter2017")
    source = data_dir / "contexts" / "blip2" / "twitter2017.txt"
    lines = source.read_text(encoding="utf-8").splitlines()
    target = data / "contexts" / "blip2" / "twitter2017.txt"
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = ContextsConfig(dataset="twitter2017", generator="blip2", data_dir=data, cache_dir=tmp_path / "cache")
    first, _ = run_contexts(cfg, progress=False)
    assert first.misses == 4819

    image_id = lines[0].split(".jpg :")[0]
    lines[0] = f"{image_id}.jpg :a corrected caption"
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    second, published = run_contexts(cfg, progress=False)
    assert second.hits == 0 and second.misses == 4819  # the source hash is part of every key
    assert read_context_set(published.path).contexts[image_id] == "a corrected caption"

    target.write_text("\n".join(lines[:5] + ["no separator on this line"] + lines[5:]) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"twitter2017.txt:6: expected '<image_id>.jpg :<caption>'"):
        run_contexts(cfg, progress=False)
