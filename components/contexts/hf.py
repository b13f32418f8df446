"""The hf backend: a local Hugging Face image-text-to-text model writes the contexts.

Any model the auto classes know loads the same way (LLaVA-1.5, BLIP-2, InstructBLIP, Qwen2-VL, SmolVLM/Idefics3):
    processor = AutoProcessor.from_pretrained(path); model = AutoModelForImageTextToText.from_pretrained(path)
The prompt goes through the processor's chat template (one user turn: the image, then the prompt) when it has one,
else through `prompt_template` or as the bare prompt (BLIP-2's processor inserts its own image tokens). Batches are
left-padded so that every row's continuation starts at the same position; decoding is greedy unless sampling is
asked for, so a context is a function of (image, model, prompt, parameters), which is what the cache key assumes.
The model loads on the first miss only: a rerun that is all cache hits never touches the weights.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from components.common.images import ImageInput
from components.contexts.base import GenerationFailure, GeneratorSpec, ImageGenerator
from components.contexts.settings import GenerationSettings, HFSettings

logger = logging.getLogger(__name__)

_SMALL_FILE = 16 * 1024 * 1024
_EDGE = 1024 * 1024


def model_fingerprint(model_path: Path) -> str:
    """sha256 identifying a saved model directory without reading gigabytes of weights on every run.

    Files up to 16 MiB (configs, tokenizer, processor, chat template) are hashed whole; larger files (weights) by
    name, size and their first and last MiB. A safetensors file starts with its tensor index and ends inside the
    last tensor's data, so a fine-tuned or re-quantised copy of a model changes the fingerprint.
    """
    root = Path(model_path)
    if not root.is_dir():
        raise FileNotFoundError(f"hf model path {root}: not a directory (expected the output of save_pretrained)")
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(root).as_posix()}\0{size}\0".encode())
        with open(path, "rb") as fh:
            if size <= _SMALL_FILE:
                digest.update(fh.read())
            else:
                digest.update(fh.read(_EDGE))
                fh.seek(size - _EDGE)
                digest.update(fh.read(_EDGE))
    return digest.hexdigest()


def _resolve_device_dtype(device: str, dtype: str):
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bf16" if device == "cuda" else "fp32"  # bf16 on GPU halves memory; CPUs are fastest in fp32
    return device, {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]


class HFGenerator(ImageGenerator):
    def __init__(
        self,
        settings: HFSettings,
        prompt: str,
        generation: GenerationSettings,
        image_dir: Path | None,
        max_pixels: int,
        max_image_bytes: int,
        name: str | None = None,
    ):
        super().__init__(image_dir, max_pixels, max_image_bytes)
        if settings.model_path is None:
            raise ValueError("hf backend: set the model path (`--model-path`, a directory written by save_pretrained)")
        self.settings = settings
        self.model_path = Path(settings.model_path)
        self.generation = generation
        self.name = name or self.model_path.name
        params: dict[str, Any] = {
            "max_new_tokens": generation.max_new_tokens,
            "do_sample": generation.do_sample,
            "num_beams": generation.num_beams,
            "prompt_template": settings.prompt_template,
        }
        if generation.do_sample:
            params |= {"temperature": generation.temperature, "top_p": generation.top_p}
        self.spec = GeneratorSpec(
            generator_id=f"hf:{self.name}@{model_fingerprint(self.model_path)[:16]}", prompt=prompt, params=params
        )
        self._lock = threading.Lock()  # one model, many task threads: load once, generate one batch at a time
        self._model: Any = None  # an image-text-to-text model and its processor, loaded on the first miss
        self._processor: Any = None

    # -- loading ---------------------------------------------------------------------------------------------------
    def _load(self):
        if self._model is not None:
            return
        from transformers import AutoModelForImageTextToText, AutoProcessor

        device, dtype = _resolve_device_dtype(self.settings.device, self.settings.dtype)
        t0 = time.perf_counter()
        processor = AutoProcessor.from_pretrained(self.model_path, local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(self.model_path, dtype=dtype, local_files_only=True)
        model.to(device).eval()
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.padding_side = "left"  # batched decoder-only generation continues every row at the same column
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
        self._processor, self._model, self.device, self.dtype = processor, model, device, dtype
        logger.info("loaded %s on %s (%s) in %.1fs", self.model_path, device, dtype, time.perf_counter() - t0)

    def _prompt_text(self) -> str:
        if self.settings.prompt_template is not None:
            return self.settings.prompt_template.format(prompt=self.spec.prompt)
        if getattr(self._processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.spec.prompt}]}]
            return self._processor.apply_chat_template(messages, add_generation_prompt=True)
        return self.spec.prompt

    # -- generation ------------------------------------------------------------------------------------------------
    def _generate_batch(self, images) -> list[str]:
        import torch

        prompt = self._prompt_text()
        inputs = self._processor(images=images, text=[prompt] * len(images), return_tensors="pt", padding=True)
        inputs = inputs.to(device=self.device, dtype=self.dtype)  # casts only the floating tensors (pixels)
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.generation.max_new_tokens,
            "do_sample": self.generation.do_sample,
            "num_beams": self.generation.num_beams,
        }
        if self.generation.do_sample:
            kwargs |= {"temperature": self.generation.temperature, "top_p": self.generation.top_p}
        with torch.inference_mode():
            output = self._model.generate(**inputs, **kwargs)  # (B, T_prompt + T_new) or (B, T_new)
        prompt_ids = inputs.get("input_ids")
        if prompt_ids is not None and output.shape[1] >= prompt_ids.shape[1]:
            # Decoder-only models return the prompt first; encoder-decoder ones (BLIP-2 with Flan-T5) do not.
            if torch.equal(output[:, : prompt_ids.shape[1]], prompt_ids):
                output = output[:, prompt_ids.shape[1] :]  # (B, T_new)
        texts = self._processor.batch_decode(output, skip_special_tokens=True)
        return [text.strip() for text in texts]

    def generate(self, items: list[ImageInput]) -> Iterator[tuple[ImageInput, str | GenerationFailure]]:
        decoded, failures = self.decode_all(items)
        yield from failures
        size = self.settings.batch_size
        for start in range(0, len(decoded), size):
            batch = decoded[start : start + size]
            with self._lock:
                self._load()
                texts = self._generate_batch([image for _, image in batch])
            for (item, _), text in zip(batch, texts, strict=True):
                yield item, text
