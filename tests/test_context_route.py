"""One route to a run's contexts: `shapca train` (load_context_set without a context file) publishes the set through
the context cache, as the train flow's generate-contexts subflow does, and reads the published file."""

from __future__ import annotations

from components.config import DataConfig
from components.contexts.context_set import read_manifest, set_paths
from components.data.datasets import load_contexts
from components.training.data import contexts_config_for, load_context_set, load_training_data


def test_a_run_without_a_context_file_reads_the_set_it_published_through_the_cache(data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the context cache lives under ./.cache/contexts
    cfg = DataConfig(dataset="twitter2017", data_dir=data_dir, max_examples={"train": 5, "dev": 3, "test": 2})
    contexts = load_context_set(cfg)
    published, _ = set_paths(contexts_config_for(cfg).cache_dir, "twitter2017", "blip2")
    manifest = read_manifest(tmp_path / published)
    assert manifest["backend"] == "precomputed" and manifest["content_hash"] == contexts.content_hash()
    assert manifest["run"]["misses"] == len(contexts.contexts) > 0  # generated (imported) through the cache
    source = load_contexts("blip2", "twitter2017", data_dir).contexts
    assert all(source[image_id] == text for image_id, text in contexts.contexts.items())
    # The run sees the contexts of its own examples, exactly as the published file has them.
    data = load_training_data(cfg)
    used = {e.image_id for examples in data.splits.values() for e in examples}
    assert data.contexts.contexts == {i: source[i] for i in used if i in source}
    assert load_context_set(cfg).contexts == contexts.contexts  # a second run hits the cache
    assert read_manifest(tmp_path / published)["run"]["hits"] == len(contexts.contexts)


def test_mnre_runs_read_no_contexts_unless_a_set_was_generated(data_dir):
    assert load_context_set(DataConfig(dataset="mnre", data_dir=data_dir)) is None
    assert load_context_set(DataConfig(dataset="twitter2017", data_dir=data_dir, context_generator="none")) is None
