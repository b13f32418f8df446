"""One route to a run's contexts, split into a publisher and a reader: a run that trains (`shapca train`) publishes its
context set through the context cache, as the train flow's generate-contexts subflow does, and reads the published
file; a reader (evaluation, benchmarks) gets the same contexts from the cache and writes nothing."""

from __future__ import annotations

from pathlib import Path

from components.config import DataConfig
from components.contexts import cache as context_cache
from components.contexts import context_set
from components.contexts.context_set import read_manifest, set_paths
from components.datasets import load_contexts
from components.training.data import contexts_config_for, load_context_set, load_training_data, publish_run_contexts

CAPPED = {"train": 5, "dev": 3, "test": 2}


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and modification time (ns): what a write would change."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def refuse_cache_writes(monkeypatch) -> None:
    """Every way the context cache is written (a record, a temp sweep, a published set file) fails from now on: a
    read-only cache. The suite runs as root, whom a read-only mode does not stop, so the writes themselves fail."""

    def refuse(*args, **kwargs):
        raise PermissionError("the context cache is read-only in this test")

    for owner, name in [
        (context_cache.ContextCache, "put"),
        (context_cache.ContextCache, "sweep_temp"),
        (context_cache.S3ContextCache, "put"),
        (context_set, "_atomic_write_text"),
    ]:
        monkeypatch.setattr(owner, name, refuse)


def test_a_training_run_publishes_its_set_through_the_cache_and_reads_the_file(data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the context cache lives under ./.cache/contexts
    cfg = DataConfig(dataset="twitter2017", data_dir=data_dir, max_examples=CAPPED)
    published = publish_run_contexts(cfg)
    assert published == set_paths(contexts_config_for(cfg).cache_dir, "twitter2017", "blip2")[0]  # under the cwd
    contexts = load_context_set(cfg, published)
    manifest = read_manifest(published)
    assert manifest["backend"] == "precomputed" and manifest["content_hash"] == contexts.content_hash()
    assert manifest["run"]["misses"] == len(contexts.contexts) > 0  # generated (imported) through the cache
    source = load_contexts("blip2", "twitter2017", data_dir).contexts
    assert all(source[image_id] == text for image_id, text in contexts.contexts.items())
    # The run sees the contexts of its own examples, exactly as the published file has them.
    data = load_training_data(cfg, published)
    used = {e.image_id for examples in data.splits.values() for e in examples}
    assert data.contexts.contexts == {i: source[i] for i in used if i in source}
    publish_run_contexts(cfg)  # a second run hits the cache
    assert read_manifest(published)["run"]["hits"] == len(contexts.contexts)


def test_a_reader_gets_the_published_contexts_and_writes_nothing(data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = DataConfig(dataset="twitter2017", data_dir=data_dir, max_examples=CAPPED)
    with monkeypatch.context() as read_only:
        refuse_cache_writes(read_only)
        cold = load_training_data(cfg)  # an empty cache: every context a miss, made in memory and not stored
    assert not (tmp_path / ".cache").exists()
    published = publish_run_contexts(cfg)  # a publisher (a training run) fills the cache
    before = tree(tmp_path / ".cache")
    with monkeypatch.context() as read_only:
        refuse_cache_writes(read_only)
        warm = load_training_data(cfg)  # all hits now, read from the read-only cache
    assert tree(tmp_path / ".cache") == before
    assert cold.contexts.contexts  # the capped splits' images have contexts
    assert cold.contexts == warm.contexts == load_training_data(cfg, published).contexts


def test_mnre_runs_read_no_contexts_unless_a_set_was_generated(data_dir):
    assert load_context_set(DataConfig(dataset="mnre", data_dir=data_dir)) is None
    assert publish_run_contexts(DataConfig(dataset="mnre", data_dir=data_dir)) is None
    assert load_context_set(DataConfig(dataset="twitter2017", data_dir=data_dir, context_generator="none")) is None
