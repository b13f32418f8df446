"""The openai backend: any OpenAI-compatible chat-completions server writes the contexts (vLLM, TGI and Ollama serve
multimodal models this way).

One request per image: POST {base_url}/chat/completions with one user message holding the prompt and the image as a
base64 `data:` URL; the context is `choices[0].message.content`. Requests run on a bounded thread pool
(`concurrency`), each with a timeout; timeouts, connection errors, 429 and 5xx are retried with exponential backoff
(`backoff_s * 2**attempt`, capped at `max_backoff_s`), other 4xx are failures of that image. Results are yielded as
they complete, so a killed run loses at most the requests in flight.
The API key is read from the environment variable named by `api_key_env` at construction, sent only in the
Authorization header, and never stored in the config, the cache, a log line or an error message.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import httpx

from components.common.images import ImageInput, ImageProblem
from components.contexts.base import GenerationFailure, GeneratorSpec, ImageGenerator
from components.contexts.settings import GenerationSettings, OpenAISettings

logger = logging.getLogger(__name__)

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class ServerUnavailable(RuntimeError):
    """Raised when many requests in a row fail: the server is down or misconfigured, not one image bad."""


class _Retryable(Exception):
    pass


class OpenAIGenerator(ImageGenerator):
    def __init__(
        self,
        settings: OpenAISettings,
        prompt: str,
        generation: GenerationSettings,
        image_dir: Path | None,
        max_pixels: int,
        max_image_bytes: int,
        max_consecutive_failures: int = 20,
    ):
        super().__init__(image_dir, max_pixels, max_image_bytes)
        if not settings.model:
            raise ValueError("openai backend: set the served model name (`--model`), as the server lists it")
        self.settings = settings
        self.generation = generation
        self.url = settings.base_url.rstrip("/") + "/chat/completions"
        params = {"max_tokens": generation.max_new_tokens, "temperature": 0.0}
        if generation.do_sample:
            params = {
                "max_tokens": generation.max_new_tokens,
                "temperature": generation.temperature,
                "top_p": generation.top_p,
            }
        # The served model's name identifies it; the URL does not (the same model behind another host writes the same).
        self.spec = GeneratorSpec(generator_id=f"openai:{settings.model}", prompt=prompt, params=params)
        headers = {"Content-Type": "application/json"}
        api_key = os.environ.get(settings.api_key_env)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(settings.timeout_s))
        self.max_consecutive_failures = max_consecutive_failures
        self._consecutive_failures = 0
        self._failure_lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def request_body(self, data_url: str) -> dict:
        content = [{"type": "text", "text": self.spec.prompt}, {"type": "image_url", "image_url": {"url": data_url}}]
        return {"model": self.settings.model, "messages": [{"role": "user", "content": content}], **self.spec.params}

    def _post_once(self, body: dict) -> str:
        try:
            response = self._client.post(self.url, json=body)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timed out after {self.settings.timeout_s}s ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise _Retryable(f"connection error: {type(exc).__name__}: {exc}") from None
        if response.status_code in _RETRY_STATUS:
            raise _Retryable(f"HTTP {response.status_code}: {response.text[:200]}")
        if response.status_code >= 400:
            raise ValueError(f"HTTP {response.status_code}: {response.text[:200]}")
        try:
            text = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise ValueError(
                f"reply is not a chat completion (choices[0].message.content): {response.text[:200]}"
            ) from err
        if not isinstance(text, str):
            raise ValueError(f"choices[0].message.content is {type(text).__name__}, expected a string")
        return text.strip()

    def _describe(self, item: ImageInput) -> str | GenerationFailure:
        try:
            body = self.request_body(item.data_url(self.max_pixels))
        except ImageProblem as problem:
            return GenerationFailure(item.image_id, problem.reason)
        attempt = 0
        while True:
            try:
                text = self._post_once(body)
                self._record(ok=True)
                return text
            except _Retryable as exc:
                if attempt >= self.settings.max_retries:
                    self._record(ok=False)
                    return GenerationFailure(
                        item.image_id, f"request failed: {exc} (after {attempt + 1} attempts to {self.url})"
                    )
                delay = min(self.settings.backoff_s * 2**attempt, self.settings.max_backoff_s)
                logger.info("image %s: %s; retrying in %.1fs", item.image_id, exc, delay)
                time.sleep(delay)
                attempt += 1
            except ValueError as exc:
                self._record(ok=False)
                return GenerationFailure(item.image_id, f"rejected: {exc} ({self.url})")

    def _record(self, ok: bool) -> None:
        with self._failure_lock:
            self._consecutive_failures = 0 if ok else self._consecutive_failures + 1
            if self._consecutive_failures >= self.max_consecutive_failures:
                raise ServerUnavailable(
                    f"{self.url}: {self._consecutive_failures} requests in a row failed; is the server up and serving "
                    f"model {self.settings.model!r}? Work done so far is cached; rerun to resume."
                )

    def generate(self, items: list[ImageInput]) -> Iterator[tuple[ImageInput, str | GenerationFailure]]:
        with ThreadPoolExecutor(max_workers=self.settings.concurrency, thread_name_prefix="contexts-openai") as pool:
            pending = {pool.submit(self._describe, item): item for item in items}
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        item = pending.pop(future)
                        yield item, future.result()
            finally:
                for future in pending:
                    future.cancel()
