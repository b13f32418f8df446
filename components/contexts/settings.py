"""Typed settings for context generation: which backend writes the contexts, with what prompt and parameters, and
where the cache lives.

Everything that changes the text a generator writes (prompt, max_new_tokens, decoding settings, the model) is part of
the cache key; everything that only changes how fast it is written (batch size, concurrency, device, timeouts) is not.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from components.common.images import DEFAULT_MAX_PIXELS

# Asks for what multimodal NER/RE needs from an image: who and what is in it, where, and any text it shows.
DEFAULT_PROMPT = (
    "Describe this image in detail. Name the people, places and organisations you can identify, "
    "and transcribe any text that appears in the image."
)


CACHE_URL_ENV = "SHAPCA_CONTEXT_CACHE"


class HFSettings(BaseModel):
    """A local Hugging Face image-text-to-text model (LLaVA-1.5, BLIP-2, InstructBLIP, Qwen2-VL, SmolVLM, ...)."""

    model_config = ConfigDict(extra="forbid")

    model_path: Path | None = None  # a directory written by save_pretrained; never a hub id (no network)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    batch_size: int = Field(default=8, ge=1)
    # None: use the processor's chat template, or the bare prompt when it has none (BLIP-2 style processors).
    prompt_template: str | None = None  # e.g. "USER: <image>\n{prompt} ASSISTANT:"


class OpenAISettings(BaseModel):
    """Any OpenAI-compatible chat-completions server that accepts images (vLLM, TGI, Ollama)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str | None = None  # the served model name, as the server lists it
    api_key_env: str = "OPENAI_API_KEY"  # the NAME of the variable holding the key; the key itself is never stored
    concurrency: int = Field(default=4, ge=1)
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    backoff_s: float = Field(default=1.0, ge=0)  # first retry waits this long, then doubles
    max_backoff_s: float = Field(default=30.0, ge=0)


class GenerationSettings(BaseModel):
    """The decoding parameters; all of them are part of the cache key."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(default=256, ge=1)
    do_sample: bool = False  # deterministic (greedy) decoding by default: the same image gives the same context
    temperature: float = Field(default=0.0, ge=0)  # only read when do_sample is true
    top_p: float = Field(default=1.0, gt=0, le=1)
    num_beams: int = Field(default=1, ge=1)  # hf only


class ContextsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = "twitter2017"
    data_dir: Path = Path("data")
    backend: Literal["precomputed", "hf", "openai"] = "precomputed"
    # precomputed: "blip2" or "mplug-owl"; hf/openai: a name for the set (defaults to the model's name)
    generator: str | None = None
    image_dir: Path | None = None  # `<image_dir>/<image_id>.jpg`; needed by hf and openai
    cache_dir: Path = Path(".cache/contexts")  # published context sets, and the records unless cache_url is set
    # Where the cache records live when they are shared: `s3://bucket/prefix`, so that workers on any host generate
    # each context once. Defaults to $SHAPCA_CONTEXT_CACHE; unset keeps the records under cache_dir.
    cache_url: str | None = Field(default_factory=lambda: os.environ.get(CACHE_URL_ENV) or None)
    prompt: str = DEFAULT_PROMPT
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    hf: HFSettings = Field(default_factory=HFSettings)
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1)  # decompression-bomb guard
    max_image_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    chunk_size: int = Field(default=64, ge=1)  # images read and looked up together before generating the misses
    num_shards: int = Field(default=8, ge=1)  # the flow maps one task over each shard
    # fsync each cache record so that it survives a machine crash, not only a killed process (a rename is atomic
    # either way; a record lost or emptied by a crash reads as a miss and is regenerated). None: on for hf and openai,
    # where 2 ms per record is nothing next to a generation, off for precomputed, where re-importing is free.
    fsync: bool | None = None

    def records_location(self) -> str | Path:
        return self.cache_url or self.cache_dir

    def fsync_records(self) -> bool:
        return self.fsync if self.fsync is not None else self.backend != "precomputed"

    def generator_name(self) -> str:
        """The name the context set is published under."""
        if self.generator:
            return self.generator
        if self.backend == "hf" and self.hf.model_path is not None:
            return Path(self.hf.model_path).name
        if self.backend == "openai" and self.openai.model:
            return self.openai.model.replace("/", "-")
        if self.backend == "hf":
            raise ValueError("backend hf: set the model path (--model-path, a directory written by save_pretrained)")
        if self.backend == "openai":
            raise ValueError("backend openai: set the served model name (--model)")
        raise ValueError("backend precomputed: set the generator (--generator blip2 or --generator mplug-owl)")
