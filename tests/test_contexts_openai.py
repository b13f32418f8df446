"""The openai backend against a real HTTP server on 127.0.0.1 that implements the chat-completions contract: it decodes
the base64 image, describes it, and can be told to answer slowly (timeout path), with a 500 (retry path) or a 400."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from components.contexts.cache import ContextCache
from components.contexts.generate import generate_contexts
from components.contexts.openai_compat import OpenAIGenerator, ServerUnavailable
from components.contexts.settings import GenerationSettings, OpenAISettings


def describe(image_bytes: bytes) -> str:
    with Image.open(io.BytesIO(image_bytes)) as image:
        mean = tuple(round(m) for m in ImageStat.Stat(image.convert("RGB")).mean)
        return f"a {image.size[0]}x{image.size[1]} picture, mean colour {mean}"


class ChatServer:
    """POST /v1/chat/completions. Per image (by sha256 of its bytes) it can sleep, or fail a number of times."""

    def __init__(self, delay_s: float = 0.0, expected_key: str | None = None):
        self.delay_s = delay_s  # every request
        self.expected_key = expected_key
        self.slow: dict[str, float] = {}  # sha -> seconds to sleep on every request
        self.slow_once: dict[str, float] = {}  # sha -> seconds to sleep on the first request only
        self.fail_500: dict[str, int] = {}  # sha -> number of 500 replies before a good one
        self.reject_400: set[str] = set()
        self.requests: Counter = Counter()  # sha -> requests received
        self.answered: Counter = Counter()  # sha -> 200 replies sent
        self.bodies: list[dict] = []
        self.auth_headers: list[str | None] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    return self._reply(404, {"error": "not found"})
                url = body["messages"][0]["content"][1]["image_url"]["url"]
                header, _, payload = url.partition(",")
                image_bytes = base64.b64decode(payload)
                sha = hashlib.sha256(image_bytes).hexdigest()
                with server.lock:
                    server.requests[sha] += 1
                    server.bodies.append(body)
                    server.auth_headers.append(self.headers.get("Authorization"))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    nth = server.requests[sha]
                try:
                    sleep = server.delay_s + server.slow.get(sha, 0.0)
                    if nth == 1:
                        sleep += server.slow_once.get(sha, 0.0)
                    time.sleep(sleep)
                    if server.expected_key and self.headers.get("Authorization") != f"Bearer {server.expected_key}":
                        return self._reply(401, {"error": "bad key"})
                    if sha in server.reject_400:
                        return self._reply(400, {"error": "image refused"})
                    if nth <= server.fail_500.get(sha, 0):
                        return self._reply(500, {"error": "overloaded"})
                    content = describe(image_bytes) + f" ({header.removeprefix('data:').split(';')[0]})"
                    self._reply(
                        200,
                        {
                            "id": "x",
                            "object": "chat.completion",
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": content},
                                    "finish_reason": "stop",
                                }
                            ],
                        },
                    )
                    with server.lock:
                        server.answered[sha] += 1
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _reply(self, status: int, payload: dict):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout) or was killed

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def make_images(directory: Path, count: int) -> dict[str, str]:
    """`count` distinct JPEGs; returns image_id -> sha256 of its bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    shas = {}
    for index in range(count):
        image = Image.new("RGB", (30 + index, 20), ((37 * index) % 256, (91 * index) % 256, (53 * index) % 256))
        path = directory / f"im{index}.jpg"
        image.save(path, format="JPEG", quality=95)
        shas[f"im{index}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return shas


def test_openai_backend_contract_concurrency_retries_timeouts(tmp_path: Path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("SHAPCA_TEST_KEY", secret)
    shas = make_images(tmp_path / "images", 10)
    with ChatServer(delay_s=0.05, expected_key=secret) as server:
        server.fail_500[shas["im1"]] = 2  # two 500s, then an answer: retried
        server.fail_500[shas["im2"]] = 99  # always 500: a failure after max_retries + 1 attempts
        server.slow_once[shas["im3"]] = 1.0  # first attempt times out, the retry answers
        server.slow[shas["im4"]] = 1.0  # always too slow: a timeout failure
        server.reject_400.add(shas["im5"])  # a client error: not retried
        settings = OpenAISettings(
            base_url=server.base_url,
            model="tiny-lmm",
            api_key_env="SHAPCA_TEST_KEY",
            concurrency=3,
            timeout_s=0.4,
            max_retries=2,
            backoff_s=0.01,
        )
        generator = OpenAIGenerator(
            settings, "Describe.", GenerationSettings(max_new_tokens=32), tmp_path / "images", 10_000_000, 5_000_000
        )
        cache = ContextCache(tmp_path / "cache", fsync=True)
        ids = list(shas) + ["gone"]
        report = generate_contexts(ids, generator, cache, progress=False)

        ok = ["im0", "im1", "im3", "im6", "im7", "im8", "im9"]
        assert sorted(report.contexts) == ok
        for image_id in ok:
            expected = describe((tmp_path / "images" / f"{image_id}.jpg").read_bytes()) + " (image/jpeg)"
            assert report.contexts[image_id] == expected
        reasons = {f.image_id: f.reason for f in report.failures}
        assert set(reasons) == {"im2", "im4", "im5", "gone"}
        assert reasons["im2"].startswith("request failed: HTTP 500") and "after 3 attempts" in reasons["im2"]
        assert reasons["im4"].startswith("request failed: timed out after 0.4s")
        assert "after 3 attempts" in reasons["im4"]
        assert reasons["im5"].startswith("rejected: HTTP 400")
        assert reasons["gone"].startswith("missing:")
        assert server.requests[shas["im1"]] == 3 and server.requests[shas["im2"]] == 3
        assert server.requests[shas["im3"]] == 2 and server.requests[shas["im5"]] == 1
        assert server.requests[shas["im0"]] == 1

        # The contract: the request the server saw.
        body = server.bodies[0]
        assert body["model"] == "tiny-lmm" and body["max_tokens"] == 32 and body["temperature"] == 0.0
        content = body["messages"][0]["content"]
        assert body["messages"][0]["role"] == "user"
        assert content[0] == {"type": "text", "text": "Describe."}
        assert content[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
        assert set(server.auth_headers) == {f"Bearer {secret}"}

        # The key never leaves the Authorization header.
        assert secret not in caplog.text
        assert all(secret not in f.reason for f in report.failures)
        assert secret not in repr(settings) and secret not in repr(generator.spec)
        records = list((tmp_path / "cache").rglob("*.json"))
        assert records and all(secret not in p.read_text() for p in records)

        # A rerun asks the server only for what failed before; everything answered is a cache hit.
        before = server.requests.copy()
        server.fail_500.pop(shas["im2"])
        server.slow.pop(shas["im4"])
        rerun = generate_contexts(ids, generator, cache, progress=False)
        asked = server.requests - before
        assert set(asked) == {shas["im2"], shas["im4"], shas["im5"]}
        assert rerun.hits == len(ok) and rerun.misses == 2
        generator.close()


def test_requests_are_concurrent_and_bounded(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    make_images(tmp_path / "images", 12)
    with ChatServer(delay_s=0.1) as server:
        settings = OpenAISettings(base_url=server.base_url, model="m", concurrency=3, timeout_s=5)
        generator = OpenAIGenerator(settings, "p", GenerationSettings(), tmp_path / "images", 10_000_000, 5_000_000)
        report = generate_contexts(
            [f"im{i}" for i in range(12)], generator, ContextCache(tmp_path / "c"), progress=False
        )
        assert report.misses == 12
        assert 2 <= server.max_in_flight <= 3  # concurrent, and never more than `concurrency` at once
        assert set(server.auth_headers) == {None}  # no key in the environment: no Authorization header at all


def test_server_down_stops_the_run_with_a_clear_error(tmp_path: Path):
    make_images(tmp_path / "images", 3)
    with ChatServer() as server:
        url = server.base_url
    # The server is shut: connections are refused.
    settings = OpenAISettings(base_url=url, model="m", concurrency=1, timeout_s=0.5, max_retries=1, backoff_s=0.01)
    generator = OpenAIGenerator(
        settings, "p", GenerationSettings(), tmp_path / "images", 10_000_000, 5_000_000, max_consecutive_failures=2
    )
    with pytest.raises(ServerUnavailable, match="2 requests in a row failed"):
        generate_contexts(["im0", "im1", "im2"], generator, ContextCache(tmp_path / "cache"), progress=False)


def test_openai_settings_need_a_model(tmp_path: Path):
    with pytest.raises(ValueError, match="served model name"):
        OpenAIGenerator(OpenAISettings(), "p", GenerationSettings(), tmp_path, 1, 1)
