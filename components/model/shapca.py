"""Shap-CA: Shapley value-based contrastive alignment for multimodal information extraction (Luo, Xia, Shen, Li,
ACM MM 2024), assembled from its parts:

    text    --text encoder-->    token states H (B, T, d), pooled t (B, d)
    context --context encoder--> token states C (B, T_c, d_c), pooled c      (or the second segment of H: concat mode;
                                 model.context_trainable_layers: a copy trained in its top layers only, the frozen
                                 rest cached per context: context_cache.py)
    image   --vision encoder-->  patch states V (B, P, d_v), pooled v        (optional)
    L_ct, L_ci = ContrastiveAlignment(t, c, v)        alignment.py (Shapley InfoNCE, or plain InfoNCE; the token
                                                      coverage game also reads H, C, V, without special tokens)
    H += WordFeatures(raw words)                      word_features.py (model.word_features: each word's case,
                                                      @, #, digits, from its bytes, at its first sub-token: into
                                                      the encoder's input embeddings or its output states)
    H' = AdaptiveFusion(H, C, V)                      fusion.py
    task loss = head(H')                              the task's head: components/tasks/<task>/head.py
    loss = task loss + lambda_ct L_ct + lambda_ci L_ci

`ShapCA.from_config` loads pretrained encoders from local paths; `save_pretrained(dir)` writes config.json (the model
config), model.safetensors (every weight, encoders included), each encoder's config, and the processor (task, labels,
label ids, tokenizers, image processor: processor.py), so that `ShapCA.from_pretrained(dir)` rebuilds the same model
and processor without the original encoder paths. It also reads the directories of format 2, written before the head
settings moved into `model.head`.
"""

from __future__ import annotations

import copy
import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import Tensor, nn

from components.common.versioned_json import read_versioned_json, write_versioned_json
from components.model.alignment import ContrastiveAlignment, Projected, Tokens
from components.model.batch import Batch
from components.model.context_cache import CachedContextEncoder
from components.model.encoders import (
    HFModel,
    encode_images,
    encoder_from_saved,
    hidden_size,
    load_image_encoder,
    load_text_encoder,
    mean_pool,
)
from components.model.fusion import AdaptiveFusion, FusionOutput
from components.model.processor import ShapCAProcessor
from components.model.shapca_config import ShapCAConfig
from components.model.word_features import WordFeatures, add_at_words
from components.tasks import TaskName, get_task

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
# 2: task, labels and tokenizers are the processor's (processor.json); 3: the head's settings are `model.head`
FORMAT, FORMAT_VERSION = "shapca", 3
ENCODER_DIRS = {"text": "text_encoder", "context": "context_encoder", "image": "image_encoder"}


@dataclass
class ShapCAOutput:
    loss: Tensor  # task_loss + align_loss
    task_loss: Tensor
    align_loss: Tensor  # lambda_ct * align_ct + lambda_ci * align_ci (0 without alignment)
    shapley: Tensor | None  # (N, N) phi[i, j]: context i's Shapley value for text j (detached); None unless shapley
    align_ct: Tensor | None = None  # unweighted context-text loss
    align_ci: Tensor | None = None  # unweighted context-image loss
    logits: Tensor | None = None  # the head's: tag emissions (B, W, C) of a tagger, relation logits (B, R), ...
    context_gate: Tensor | None = None  # (B, T) fusion gates, for inspection
    image_gate: Tensor | None = None  # (B, T)


@dataclass
class Encoded:
    fusion: FusionOutput
    text: Tensor  # (B, d) pooled text
    context: Tensor | None  # (B, d_c) pooled context
    image: Tensor | None  # (B, d_v) pooled image
    text_tokens: Tokens | None = None  # token states for the token coverage game (None unless it is played)
    context_tokens: Tokens | None = None
    image_tokens: Tokens | None = None


def _content_tokens(states: Tensor, input_ids: Tensor | None, mask: Tensor | None, tokenizer: Any) -> Tokens:
    """states (B, T, d) with mask (B, T) less the tokenizer's special tokens ([CLS], [SEP], entity markers): the
    tokens a coverage game covers. [UNK] stays: it stands for a real word (an emoji, a rare script)."""
    if input_ids is None or mask is None:
        raise ValueError("a coverage game needs the ids and the mask of the tokens it covers: use model.processor")
    ids = [i for i in tokenizer.all_special_ids if i != tokenizer.unk_token_id]
    special = torch.tensor(ids, dtype=input_ids.dtype, device=input_ids.device)
    return Tokens(states, mask.bool() & ~torch.isin(input_ids, special))


def _model_config_of_format_2(model: dict, task: str) -> dict:
    """A format-2 model section: the head's settings sat beside the model's (pair_hidden); they now live with the
    task, in `model.head`, so that a model registered before loads in this code too (`shapca evaluate`)."""
    settings = get_task(task).settings.model_fields
    model = dict(model)
    moved = {key: model.pop(key) for key in list(model) if key not in ShapCAConfig.model_fields}
    return model | {"head": {key: value for key, value in moved.items() if key in settings}}


class ShapCA(nn.Module):
    def __init__(
        self,
        config: ShapCAConfig,
        processor: ShapCAProcessor,  # its tokenizers are the encoders'; its task and labels are the model's
        text_encoder: HFModel,
        context_encoder: HFModel | None = None,  # a separate context encoder; None shares the text encoder
        image_encoder: HFModel | None = None,
    ):
        super().__init__()
        # The window sizes and the context mode live in both (the processor cuts, the model encodes): they must agree.
        window = ("max_text_tokens", "max_context_tokens", "context_mode", "word_features")
        disagree = [
            f"{k}: model {getattr(config, k)!r}, processor {getattr(processor, k)!r}"
            for k in window
            if getattr(config, k) != getattr(processor, k)
        ]
        if disagree:
            raise ValueError(f"the processor was built for another model config ({'; '.join(disagree)})")
        task = get_task(processor.task)
        settings = task.head_settings(config.head)
        # The head's settings written out in full, so that a saved model keeps them whatever later defaults say.
        self.config = config.model_copy(update={"head": settings.model_dump()})
        self.processor = processor
        self.task, self.labels = processor.task, processor.labels
        self.text_encoder, self.context_encoder, self.image_encoder = text_encoder, context_encoder, image_encoder
        if len(self.tokenizer) > self.text_encoder.get_input_embeddings().num_embeddings:
            # tokens the task added (entity markers) get embeddings of their own
            self.text_encoder.resize_token_embeddings(len(self.tokenizer))
        self._takes_token_types = "token_type_ids" in inspect.signature(self.text_encoder.forward).parameters
        trainable = config.context_trainable_layers
        cached = isinstance(context_encoder, CachedContextEncoder)
        if config.context_mode == "fusion" and trainable is not None and not cached:
            # a copy, so the text encoder keeps training whole (from_pretrained passes the saved copy)
            base = context_encoder if context_encoder is not None else copy.deepcopy(self.text_encoder)
            self.context_encoder = CachedContextEncoder(base, trainable, config.context_cache_entries)

        dim = hidden_size(self.text_encoder)
        context_dim = hidden_size(self.context_encoder) if self.context_encoder is not None else dim
        image_dim = hidden_size(self.image_encoder) if self.image_encoder is not None else None
        fused_context = context_dim if config.context_mode == "fusion" else None
        self.fusion = (
            AdaptiveFusion(
                dim,
                fused_context,
                image_dim,
                config.fusion_heads,
                config.dropout,
                context_gate_floor=config.context_gate_floor,
                context_gate_bias=config.context_gate_bias,
            )
            if fused_context or image_dim
            else None
        )
        self.alignment = (
            ContrastiveAlignment(
                dim,
                context_dim,
                image_dim,
                config.align_dim,
                config.alignment,
                config.estimator,
                config.permutations,
                config.temperature,
                game=config.shapley_game,
                coverage=config.coverage_scores,
            )
            if config.alignment != "none"
            else None
        )
        self.head = task.head_class()(dim, self.labels, config.dropout, settings)
        # Built last, so that every other layer draws the same initial weights with the word features as without.
        self.word_features = (
            WordFeatures(config.word_features, dim, config.dropout) if config.word_features != "none" else None
        )

    # -- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: ShapCAConfig, task: TaskName | str, labels: list[str]) -> ShapCA:
        """A new model on pretrained encoders loaded from local paths (head, fusion, projections from scratch)."""
        get_task(task).check_labels(labels)
        if task == "re" and config.word_features != "none" and config.word_features_at == "states":
            log.warning(
                "model.word_features=%s at the states reaches nothing in relation extraction (its head reads only the "
                "entity markers' states): set model.word_features_at=embeddings, or model.word_features=none",
                config.word_features,
            )
        text = load_text_encoder(config.text_encoder)
        context = (
            load_text_encoder(config.context_encoder, "context_encoder")
            if config.context_encoder is not None and config.context_mode == "fusion"
            else None
        )
        image = load_image_encoder(config.image_encoder) if config.image_encoder is not None else None
        processor = ShapCAProcessor.for_model(
            config,
            task,
            labels,
            text.tokenizer,
            context.tokenizer if context else None,
            image.processor if image else None,
        )
        return cls(config, processor, text.model, context.model if context else None, image.model if image else None)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def _encoders(self) -> dict[str, HFModel]:
        encoders = {"text": self.text_encoder, "context": self.context_encoder, "image": self.image_encoder}
        return {name: encoder for name, encoder in encoders.items() if encoder is not None}

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, encoder in self._encoders().items():
            encoder.config.save_pretrained(directory / ENCODER_DIRS[name])  # the weights go into model.safetensors
        self.processor.save_pretrained(directory)
        write_versioned_json(
            directory / CONFIG_FILE,
            FORMAT,
            FORMAT_VERSION,
            {
                "encoders": sorted(self._encoders()),
                "model": self.config.model_dump(mode="json"),
            },
        )
        save_model(self, str(directory / "model.safetensors"))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> ShapCA:
        directory = Path(directory)
        meta = read_versioned_json(
            directory / CONFIG_FILE, FORMAT, FORMAT_VERSION, "ShapCA.save_pretrained", older=(2,)
        )
        encoders = {name: encoder_from_saved(directory / ENCODER_DIRS[name]) for name in meta["encoders"]}
        processor = ShapCAProcessor.from_pretrained(directory)
        model_section = meta["model"]
        if meta["format_version"] == 2:
            model_section = _model_config_of_format_2(model_section, processor.task)
        config = ShapCAConfig.model_validate(model_section)
        model = cls(config, processor, encoders["text"], encoders.get("context"), encoders.get("image"))
        load_model(model, str(directory / "model.safetensors"), strict=True)
        return model.eval()

    @property
    def uses_images(self) -> bool:
        """Whether the model has an image encoder (otherwise images given to the processor are not used)."""
        return self.image_encoder is not None

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """encoder: the pretrained encoders; other: everything trained from scratch (fusion, projections, heads).
        Frozen parameters (a cached context encoder's bottom) are in neither."""
        encoders = [m for m in (self.text_encoder, self.context_encoder, self.image_encoder) if m is not None]
        encoder_ids = {id(p) for m in encoders for p in m.parameters()}
        params = [p for p in self.parameters() if p.requires_grad]  # deduplicated by nn.Module
        return {
            "encoder": [p for p in params if id(p) in encoder_ids],
            "other": [p for p in params if id(p) not in encoder_ids],
        }

    # -- forward -----------------------------------------------------------------------------------------------
    def encode(self, batch: Batch) -> Encoded:
        """The batch through the encoders and the fusion: pooled vectors per input, fused text states, and the token
        states the coverage game reads (when it is played)."""
        extra = {}
        if self._takes_token_types and batch.token_type_ids is not None:  # segment ids of text [SEP] context
            extra["token_type_ids"] = batch.token_type_ids
        words = None
        if self.word_features is not None:
            words = self.word_features(batch.word_chars, batch.word_shapes)  # (B, W, d)
        if words is not None and self.config.word_features_at == "embeddings":
            embedded = self.text_encoder.get_input_embeddings()(batch.input_ids)  # (B, T, d)
            extra["inputs_embeds"] = add_at_words(embedded, words, batch.word_index, batch.word_mask)
        else:
            extra["input_ids"] = batch.input_ids
        text = self.text_encoder(attention_mask=batch.attention_mask, **extra)
        text_states = text.last_hidden_state  # (B, T, d)
        pooled_text = mean_pool(text_states, batch.text_mask)  # (B, d)
        fusion_input = text_states
        if words is not None and self.config.word_features_at == "states":  # the alignment reads the encoder's own
            fusion_input = add_at_words(text_states, words, batch.word_index, batch.word_mask)
        context_states = pooled_context = None
        # In eval mode a batch in which no sample has a context skips the context encoder: every context gate would be
        # closed, so the fused states are the text states exactly (a serving request without contexts pays for one
        # encoder, not two). Training always runs it, so that a run's dropout draws and which parameters get a
        # gradient (and so AdamW's weight decay) do not depend on which batches happen to lack contexts.
        if self.config.context_mode == "fusion" and (self.training or bool(batch.has_context.any())):
            if batch.context_input_ids is None or batch.context_attention_mask is None:
                raise ValueError("context_mode is 'fusion' but the batch has no context tokens: use model.processor")
            context_model = self.context_encoder if self.context_encoder is not None else self.text_encoder
            context_states = context_model(
                input_ids=batch.context_input_ids, attention_mask=batch.context_attention_mask
            ).last_hidden_state  # (B, T_c, d_c)
            pooled_context = mean_pool(context_states, batch.context_attention_mask)
        elif self.config.context_mode == "concat":
            if batch.context_segment_mask is None:
                raise ValueError("context_mode is 'concat' but the batch has no context segment: use model.processor")
            pooled_context = mean_pool(text_states, batch.context_segment_mask)  # the second segment
        image_states = pooled_image = None
        if self.image_encoder is not None and batch.pixel_values is not None:
            image_states, pooled_image = encode_images(self.image_encoder, batch.pixel_values)  # (B, P, d_v), (B, d_v)
        if self.fusion is None:
            fused = FusionOutput(fusion_input, None, None)
        else:
            fused = self.fusion(
                fusion_input,
                context_states,
                batch.context_attention_mask,
                batch.has_context,
                image_states,
                batch.has_image,
            )
        encoded = Encoded(fused, pooled_text, pooled_context, pooled_image)
        if self.alignment is not None and self.alignment.uses_tokens:
            encoded.text_tokens = _content_tokens(text_states, batch.input_ids, batch.text_mask, self.tokenizer)
            if context_states is not None:
                context_tokenizer = self.processor.context_tokenizer or self.tokenizer
                encoded.context_tokens = _content_tokens(
                    context_states, batch.context_input_ids, batch.context_attention_mask, context_tokenizer
                )
            elif pooled_context is not None:  # concat: the context is the second segment of the text's states
                encoded.context_tokens = _content_tokens(
                    text_states, batch.input_ids, batch.context_segment_mask, self.tokenizer
                )
            if image_states is not None:
                every_patch = torch.ones(image_states.shape[:2], dtype=torch.bool, device=image_states.device)
                encoded.image_tokens = Tokens(image_states, every_patch)  # (B, P, d_v): patches (and class token)
        return encoded

    def project(self, encoded: Encoded, rows: Tensor) -> tuple[Projected, Projected]:
        """The texts and contexts of ``rows`` ((B,) bool) in the alignment space: (texts, contexts), unit vectors."""
        if self.alignment is None or encoded.context is None:
            raise ValueError(
                "this model has no alignment space: model.alignment is 'none' or the batch has no contexts"
            )
        a = self.alignment
        text_tokens = encoded.text_tokens[rows] if encoded.text_tokens is not None else None
        context_tokens = encoded.context_tokens[rows] if encoded.context_tokens is not None else None
        return (
            a.project(a.proj_text, encoded.text[rows], text_tokens),
            a.project(a.proj_context, encoded.context[rows], context_tokens),
        )

    def scores(
        self,
        contexts: Projected,
        texts: Projected,
        *,
        permutations: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """phi (n, n): context i's Shapley value for text j, in the game the alignment trains on (see
        ContrastiveAlignment.scores for ``permutations`` and ``generator``)."""
        if self.alignment is None:
            raise ValueError("this model has no alignment (model.alignment is 'none')")
        return self.alignment.scores(contexts, texts, permutations=permutations, generator=generator)

    def forward(self, batch: Batch) -> ShapCAOutput:
        encoded = self.encode(batch)
        task_loss, logits = self.head(encoded.fusion.states, batch)
        align_loss, shapley, align_ct, align_ci = task_loss.new_zeros(()), None, None, None
        if self.alignment is not None and encoded.context is not None:
            aligned = self.alignment(
                encoded.text,
                encoded.context,
                batch.has_context,
                encoded.image,
                batch.has_image,
                text_tokens=encoded.text_tokens,
                context_tokens=encoded.context_tokens,
                image_tokens=encoded.image_tokens,
            )
            align_ct, align_ci, shapley = aligned.loss_ct, aligned.loss_ci, aligned.shapley_ct
            align_loss = self.config.lambda_ct * align_ct + self.config.lambda_ci * align_ci
        return ShapCAOutput(
            loss=task_loss + align_loss,
            task_loss=task_loss,
            align_loss=align_loss,
            shapley=shapley,
            align_ct=align_ct,
            align_ci=align_ci,
            logits=logits,
            context_gate=encoded.fusion.context_gate,
            image_gate=encoded.fusion.image_gate,
        )

    @torch.inference_mode()
    def predict(self, batch: Batch) -> list:
        """One prediction per example (in eval mode), in the form of its task's head's `decode`."""
        was_training = self.training
        if was_training:  # switching modes walks every submodule: only when needed (serving stays in eval mode)
            self.eval()
        try:
            return self.head.decode(self.encode(batch).fusion.states, batch)
        finally:
            if was_training:
                self.train()
