"""Resume after a kill: a generation subprocess (openai backend, real HTTP server on 127.0.0.1 answering slowly) is
SIGKILLed mid-run and run again. Every image ends with exactly one record, and nothing stored is asked for twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_contexts_openai import ChatServer, make_images  # same directory: pytest puts it on sys.path

from components.contexts.cache import ContextCache

NUM_IMAGES = 24
CONCURRENCY = 2

RUN = """
import json, sys
from pathlib import Path
from components.contexts.cache import ContextCache
from components.contexts.settings import GenerationSettings, OpenAISettings
from components.contexts.generate import generate_contexts
from components.contexts.openai_compat import OpenAIGenerator

base_url, image_dir, cache_dir = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
n, concurrency = int(sys.argv[4]), int(sys.argv[5])
settings = OpenAISettings(base_url=base_url, model="slow-lmm", concurrency=concurrency, timeout_s=10, max_retries=0)
generator = OpenAIGenerator(settings, "Describe.", GenerationSettings(), image_dir, 10_000_000, 5_000_000)
report = generate_contexts([f"im{i}" for i in range(n)], generator, ContextCache(cache_dir, fsync=True),
                           chunk_size=8, progress=False)
print(json.dumps({"hits": report.hits, "misses": report.misses, "failures": len(report.failures)}))
"""


def _start(server: ChatServer, images: Path, cache: Path, project_root: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(project_root)}
    env.pop("OPENAI_API_KEY", None)
    return subprocess.Popen(
        [sys.executable, "-c", RUN, server.base_url, str(images), str(cache), str(NUM_IMAGES), str(CONCURRENCY)],
        cwd=project_root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stored(cache_dir: Path) -> dict[str, str]:
    """key -> image sha256 of every complete record; parsing every file also proves none is partial."""
    out = {}
    for path in (cache_dir / "records").glob("*/*.json"):
        record = json.loads(path.read_text())
        assert record["key"] == path.stem
        out[record["key"]] = record["input"]["image_sha256"]
    return out


def test_killed_run_resumes_without_recomputing(tmp_path: Path, project_root: Path):
    shas = make_images(tmp_path / "images", NUM_IMAGES)
    cache_dir = tmp_path / "cache"
    with ChatServer(delay_s=0.25) as server:
        first = _start(server, tmp_path / "images", cache_dir, project_root)
        deadline = time.monotonic() + 60
        # Kill while requests are in flight and several results are already stored.
        while True:
            assert first.poll() is None, f"generation ended before it could be killed: {first.communicate()}"
            assert time.monotonic() < deadline, "generation made no progress"
            with server.lock:
                in_flight = server.in_flight
            if len(_stored(cache_dir)) >= 6 and in_flight > 0:
                break
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert first.returncode == -signal.SIGKILL
        time.sleep(0.5)  # let the server finish the requests of the dead client

        stored_after_kill = set(_stored(cache_dir).values())
        requested_in_first = set(server.requests)
        assert 6 <= len(stored_after_kill) < NUM_IMAGES
        before = server.requests.copy()

        second = _start(server, tmp_path / "images", cache_dir, project_root)
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        summary = json.loads(out.strip().splitlines()[-1])
        requested_in_second = server.requests - before

        # Nothing that was stored is asked for again; only what was never stored is generated.
        assert set(requested_in_second) == set(shas.values()) - stored_after_kill
        assert all(count == 1 for count in requested_in_second.values())
        assert summary == {"hits": len(stored_after_kill), "misses": NUM_IMAGES - len(stored_after_kill), "failures": 0}
        # Requested twice overall: at most the requests in flight at the kill, whose answers never reached the cache.
        twice = requested_in_first & set(requested_in_second)
        assert len(twice) <= CONCURRENCY

        # Every image has exactly one record, and every record is complete.
        stored = _stored(cache_dir)
        assert sorted(stored.values()) == sorted(shas.values())
        assert len(stored) == NUM_IMAGES
        assert len(list(ContextCache(cache_dir).records())) == NUM_IMAGES

        # A third run asks for nothing at all.
        before = server.requests.copy()
        third = _start(server, tmp_path / "images", cache_dir, project_root)
        out, err = third.communicate(timeout=60)
        assert third.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1]) == {"hits": NUM_IMAGES, "misses": 0, "failures": 0}
        assert server.requests - before == {}
