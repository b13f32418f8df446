"""The hf backend on a tiny, randomly initialised LLaVA (CLIP vision tower + Llama text model) built from configs and
saved with save_pretrained: loaded through AutoProcessor / AutoModelForImageTextToText exactly as a real model is."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from components.contexts.cache import ContextCache
from components.contexts.generate import generate_contexts
from components.contexts.hf import HFGenerator, _resolve_device_dtype, model_fingerprint
from components.contexts.settings import GenerationSettings, HFSettings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPT = "describe a b c"
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'].upper() }}: {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_tiny_llava(path: Path, seed: int = 0) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    words = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "USER:", "ASSISTANT:"]
    words += [f"w{i}" for i in range(40)] + list("abcdefghijklmnopqrstuvwxyz")
    vocab = {word: index for index, word in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            projection_dim=16,
        ),
        text_config=LlamaConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=128,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
        image_token_id=vocab["<image>"],
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    with torch.no_grad():  # a bigger spread of logits than the default init, so that images steer the text
        for param in model.parameters():
            param.normal_(0.0, 0.5)
    model.save_pretrained(path)
    processor.save_pretrained(path)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llava")
    build_tiny_llava(path)
    return path


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    directory = tmp_path / "images"
    directory.mkdir()
    colours = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (128, 128, 128), (250, 250, 0)]
    for index, colour in enumerate(colours):
        image = Image.new("RGB", (48 + 8 * index, 40), colour)
        image.paste((255 - colour[0], 0, 255 - colour[2]), (0, 0, 12, 12 + 4 * index))  # not all-flat
        image.save(directory / f"t{index}.jpg", format="JPEG", quality=95)
    return directory


def _generator(model_path: Path, image_dir: Path, **overrides) -> HFGenerator:
    settings = HFSettings(model_path=model_path, device="cpu", batch_size=overrides.pop("batch_size", 2), **overrides)
    return HFGenerator(settings, PROMPT, GenerationSettings(max_new_tokens=6), image_dir, 10_000_000, 5_000_000)


def _reference_greedy(model_path: Path, image: Image.Image, steps: int) -> str:
    """Greedy decoding written out by hand with the model's forward pass: what generate() must reproduce."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_path)
    model = AutoModelForImageTextToText.from_pretrained(model_path).eval()
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}], add_generation_prompt=True
    )
    inputs = processor(images=[image], text=[text], return_tensors="pt")
    ids, new = inputs["input_ids"], []
    with torch.no_grad():
        for _ in range(steps):
            mask = torch.ones_like(ids)
            logits = model(input_ids=ids, pixel_values=inputs["pixel_values"], attention_mask=mask).logits  # (1, T, V)
            next_id = int(logits[0, -1].argmax())
            if next_id == processor.tokenizer.eos_token_id:
                break
            new.append(next_id)
            ids = torch.cat([ids, torch.tensor([[next_id]])], dim=1)  # (1, T + 1)
    return processor.tokenizer.decode(new, skip_special_tokens=True).strip()


def test_hf_backend_generates_what_greedy_decoding_gives_and_caches_it(tiny_model: Path, images: Path, tmp_path: Path):
    cache = ContextCache(tmp_path / "cache", fsync=False)
    generator = _generator(tiny_model, images, batch_size=2)
    ids = ["t0", "t1", "t2", "t3", "t4", "absent"]
    report = generate_contexts(ids, generator, cache, progress=False)

    assert (report.hits, report.misses) == (0, 5)
    assert [f.image_id for f in report.failures] == ["absent"]
    assert report.failures[0].reason.startswith("missing: no file")
    assert generator.dtype == torch.float32 and generator.device == "cpu"  # auto dtype on CPU
    for image_id in ["t0", "t3"]:
        with Image.open(images / f"{image_id}.jpg") as image:
            expected = _reference_greedy(tiny_model, image.convert("RGB"), steps=6)
        assert report.contexts[image_id] == expected
    assert len(set(report.contexts.values())) > 1, "different images should steer the random model differently"

    # Batching does not change the text (left padding, same prompt): one image per batch gives the same contexts.
    single = generate_contexts(
        ids, _generator(tiny_model, images, batch_size=1), ContextCache(tmp_path / "c2"), progress=False
    )
    assert single.contexts == report.contexts

    # A rerun is all cache hits and never loads the weights.
    rerun_generator = _generator(tiny_model, images)
    rerun = generate_contexts(ids, rerun_generator, cache, progress=False)
    assert (rerun.hits, rerun.misses) == (5, 0)
    assert rerun.contexts == report.contexts
    assert rerun_generator._model is None


def test_generator_id_tracks_the_model_and_the_parameters(tiny_model: Path, tmp_path: Path, images: Path):
    other = tmp_path / "other-weights"
    build_tiny_llava(other, seed=1)
    renamed = tmp_path / tiny_model.name
    renamed.mkdir()
    for f in tiny_model.iterdir():
        (renamed / f.name).write_bytes(f.read_bytes())
    assert model_fingerprint(renamed) == model_fingerprint(tiny_model)  # a copy is the same model
    assert model_fingerprint(other) != model_fingerprint(tiny_model)  # other weights are not
    base = _generator(tiny_model, images)
    assert _generator(renamed, images).spec.generator_id == base.spec.generator_id
    assert _generator(other, images).spec.generator_id != base.spec.generator_id
    longer = HFGenerator(
        HFSettings(model_path=tiny_model), PROMPT, GenerationSettings(max_new_tokens=7), images, 10_000_000, 5_000_000
    )
    assert longer.spec.params != base.spec.params
    with pytest.raises(FileNotFoundError, match="not a directory"):
        model_fingerprint(tmp_path / "nope")
    with pytest.raises(ValueError, match="image_dir"):
        HFGenerator(HFSettings(model_path=tiny_model), PROMPT, GenerationSettings(), None, 1, 1)


def test_bf16_and_device_resolution(tiny_model: Path, images: Path, tmp_path: Path):
    assert _resolve_device_dtype("cpu", "auto") == ("cpu", torch.float32)
    assert _resolve_device_dtype("cuda", "auto") == ("cuda", torch.bfloat16)
    generator = _generator(tiny_model, images, dtype="bf16", prompt_template="USER: <image> {prompt} ASSISTANT:")
    report = generate_contexts(["t0", "t1"], generator, ContextCache(tmp_path / "c"), progress=False)
    assert generator._model.dtype == torch.bfloat16
    assert report.misses == 2 and all(isinstance(text, str) for text in report.contexts.values())
    assert generator.spec.params["prompt_template"] == "USER: <image> {prompt} ASSISTANT:"
