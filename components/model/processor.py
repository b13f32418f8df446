"""The processor: (example, context, image) triples -> `Batch`, the collate function of every data loader.

It holds what turns records into tensors: the text tokenizer, the context tokenizer (fusion mode, when the contexts
have an encoder of their own), the image processor, and the label maps of the task (its `label_ids`,
components/tasks/<task>/task.py; the processor only stores and checks them). The task says which words the encoder
reads and encodes the labels as arrays; the processor makes them the batch's `labels` tensors.
`save_pretrained(dir)` writes `processor.json` and the tokenizers / image processor into the encoder folders beside
the model's weights; `from_pretrained(dir)` is its exact inverse. JSON and tokenizer files only: nothing is pickled.

Words and sub-tokens. At most `max_text_tokens` words can fit in the window (every word is at least one sub-token), so
the words after that are cut BEFORE any per-word work (tokenizing, word tensors, labels, the CRF): a text's cost is
bounded by the window, not by its length. A tagger's example that loses words warns with the example id. A word the
tokenizer turns into nothing (zero-width joiners, variation selectors) is encoded as the unknown token so that it keeps
a state.

Context modes: "fusion" tokenizes each context as its own sequence for the context encoder; "concat" appends it to
the text as a second segment (text [SEP] context); "none" ignores contexts. A sample without a context (or with an
empty one) gets has_context = False, and one without an image has_image = False: the model closes those gates and
leaves those samples out of the alignment losses.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from transformers import AutoImageProcessor, AutoTokenizer

from components.common.versioned_json import read_versioned_json, write_versioned_json
from components.model.batch import Batch
from components.tasks import get_task
from components.tasks.base import EncodedWords

PROCESSOR_FILE = "processor.json"
FORMAT, FORMAT_VERSION = "shapca-processor", 1
# Where each part's files go: the folder its encoder's config shares (components/model/shapca.py).
TOKENIZER_DIRS = {
    "tokenizer": "text_encoder",
    "context_tokenizer": "context_encoder",
    "image_processor": "image_encoder",
}

Item = tuple  # (example, context text or None, PIL image or None): what a dataset yields


class ShapCAProcessor:
    def __init__(
        self,
        task: str,
        labels: list[str],
        tokenizer,  # a fast (tokenizers-backed) HF tokenizer
        *,
        max_text_tokens: int,
        max_context_tokens: int,
        context_mode: str,
        context_tokenizer=None,  # fusion mode with a context encoder of its own; None: the text tokenizer
        image_processor=None,  # None: images are not used
    ):
        self.task_spec = get_task(task)
        self.task, self.labels = task, self.task_spec.check_labels(labels)
        self.label_ids = self.task_spec.label_ids(self.labels)
        self.tokenizer, self.context_tokenizer, self.image_processor = tokenizer, context_tokenizer, image_processor
        self.max_text_tokens, self.max_context_tokens, self.context_mode = (
            max_text_tokens,
            max_context_tokens,
            context_mode,
        )
        if self.task_spec.special_tokens:  # e.g. entity markers: whole tokens (the model gives them embeddings)
            tokenizer.add_special_tokens({"additional_special_tokens": list(self.task_spec.special_tokens)})

    @classmethod
    def for_model(cls, config, task: str, labels: list[str], tokenizer, context_tokenizer=None, image_processor=None):
        """The processor of a model with this `ShapCAConfig` (its window sizes and context mode)."""
        return cls(
            task,
            labels,
            tokenizer,
            max_text_tokens=config.max_text_tokens,
            max_context_tokens=config.max_context_tokens,
            context_mode=config.context_mode,
            context_tokenizer=context_tokenizer,
            image_processor=image_processor,
        )

    # -- save / load -------------------------------------------------------------------------------------------
    def _parts(self) -> dict:
        parts = {
            "tokenizer": self.tokenizer,
            "context_tokenizer": self.context_tokenizer,
            "image_processor": self.image_processor,
        }
        return {name: part for name, part in parts.items() if part is not None}

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, part in self._parts().items():
            part.save_pretrained(directory / TOKENIZER_DIRS[name])
        meta = {
            "task": self.task,
            "labels": self.labels,
            "label_ids": self.label_ids,
            "max_text_tokens": self.max_text_tokens,
            "max_context_tokens": self.max_context_tokens,
            "context_mode": self.context_mode,
            "parts": sorted(self._parts()),
        }
        write_versioned_json(directory / PROCESSOR_FILE, FORMAT, FORMAT_VERSION, meta)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> ShapCAProcessor:
        directory = Path(directory)
        path = directory / PROCESSOR_FILE
        meta = read_versioned_json(path, FORMAT, FORMAT_VERSION, "ShapCAProcessor.save_pretrained")
        parts = set(meta["parts"])

        def load(name: str, auto):
            if name not in parts:
                return None
            return auto.from_pretrained(directory / TOKENIZER_DIRS[name], local_files_only=True)

        processor = cls(
            meta["task"],
            meta["labels"],
            load("tokenizer", AutoTokenizer),
            max_text_tokens=meta["max_text_tokens"],
            max_context_tokens=meta["max_context_tokens"],
            context_mode=meta["context_mode"],
            context_tokenizer=load("context_tokenizer", AutoTokenizer),
            image_processor=load("image_processor", AutoImageProcessor),
        )
        if processor.label_ids != meta["label_ids"]:
            raise ValueError(
                f"{path}: its label ids {meta['label_ids']} are not the ones the {meta['task']} head "
                f"builds from its labels ({processor.label_ids}); the file was written by other code"
            )
        return processor

    # -- words -------------------------------------------------------------------------------------------------
    def _words(self, example) -> list[str]:
        """The words the encoder may see: at most max_text_tokens of them (see the module docstring)."""
        if not example.tokens:
            raise ValueError(f"example {example.id}: has no tokens")
        return self.task_spec.input_words(example)[: self.max_text_tokens]  # a marker cut here fails encode_labels

    def _encodable(self, batch_words: list[list[str]]) -> list[list[str]]:
        """Replace words that tokenize to nothing by the unknown token (one batched tokenizer call)."""
        flat = [w for words in batch_words for w in words]
        pieces = self.tokenizer(flat, add_special_tokens=False)["input_ids"]
        unk, k, out = self.tokenizer.unk_token, 0, []
        for words in batch_words:
            out.append([w if pieces[k + i] else unk for i, w in enumerate(words)])
            k += len(words)
        return out

    # -- the call ----------------------------------------------------------------------------------------------
    def __call__(self, items: Sequence[Item]) -> Batch:
        """A batch of (example, context, image) triples, as a dataset yields them (data/example_dataset.py)."""
        items = list(items)
        if not items:
            raise ValueError("cannot collate an empty list of examples")
        examples = [example for example, _, _ in items]
        context_text = [context or "" for _, context, _ in items]
        words = self._encodable([self._words(ex) for ex in examples])
        has_context = torch.tensor([self.context_mode != "none" and bool(c.strip()) for c in context_text])

        if self.context_mode == "concat":
            encoding = self.tokenizer(
                words,
                [c.split() for c in context_text],
                is_split_into_words=True,
                truncation=True,
                max_length=self.max_text_tokens + self.max_context_tokens,
                padding=True,
                return_tensors="pt",
            )
        else:
            encoding = self.tokenizer(
                words,
                is_split_into_words=True,
                truncation=True,
                max_length=self.max_text_tokens,
                padding=True,
                return_tensors="pt",
            )
        segments = [encoding.sequence_ids(b) for b in range(len(examples))]
        word_index, word_mask = self._word_positions(examples, words, encoding)
        batch = Batch(
            examples=examples,
            input_ids=encoding["input_ids"],
            attention_mask=encoding["attention_mask"],
            token_type_ids=encoding.get("token_type_ids"),
            text_mask=encoding["attention_mask"].bool(),  # all real tokens, [CLS] and [SEP] too, as MiniLM pools
            has_context=has_context,
            has_image=torch.zeros(len(examples), dtype=torch.bool),
            word_index=word_index,
            word_mask=word_mask,
        )
        if self.context_mode == "concat":
            batch.text_mask = torch.tensor([[s == 0 for s in seg] for seg in segments])
            batch.context_segment_mask = torch.tensor([[s == 1 for s in seg] for seg in segments])
        elif self.context_mode == "fusion":
            context_encoding = (self.context_tokenizer or self.tokenizer)(
                context_text, truncation=True, max_length=self.max_context_tokens, padding=True, return_tensors="pt"
            )
            batch.context_input_ids = context_encoding["input_ids"]
            batch.context_attention_mask = context_encoding["attention_mask"]
        if self.image_processor is not None:
            self._add_images(batch, [image for _, _, image in items])
        batch.labels = self._labels(examples, batch, encoding)
        return batch

    def _labels(self, examples: list, batch: Batch, encoding) -> dict[str, Tensor]:
        """The task's label arrays of these examples, as tensors."""
        special = list(self.task_spec.special_tokens)
        words = EncodedWords(
            width=batch.word_index.shape[1],
            kept=batch.word_mask.sum(dim=1).tolist(),
            input_ids=encoding["input_ids"].tolist(),
            special_ids=dict(zip(special, self.tokenizer.convert_tokens_to_ids(special), strict=True)),
            max_text_tokens=self.max_text_tokens,
        )
        arrays = self.task_spec.encode_labels(examples, self.label_ids, words)
        return {name: torch.from_numpy(array) for name, array in arrays.items()}

    def _word_positions(self, examples, words, encoding) -> tuple[Tensor, Tensor]:
        n_words = max(len(w) for w in words)
        word_index = torch.zeros(len(examples), n_words, dtype=torch.long)
        word_mask = torch.zeros(len(examples), n_words, dtype=torch.bool)
        for b, example in enumerate(examples):
            for position, (word, segment) in enumerate(
                zip(encoding.word_ids(b), encoding.sequence_ids(b), strict=False)
            ):
                if word is not None and segment == 0 and not word_mask[b, word]:
                    word_index[b, word], word_mask[b, word] = position, True
            lost = len(example.tokens) - int(word_mask[b].sum())
            if lost and self.task_spec.warns_on_cut:
                warnings.warn(
                    f"example {example.id}: its last {lost} words fall beyond model.max_text_tokens="
                    f"{self.max_text_tokens}; they get no state and are predicted O",
                    stacklevel=3,
                )
        return word_index, word_mask  # (B, W) each

    def _add_images(self, batch: Batch, images: list) -> None:
        present = [b for b, image in enumerate(images) if image is not None]
        if not present:
            return
        pixels = self.image_processor(images=[images[b].convert("RGB") for b in present], return_tensors="pt")[
            "pixel_values"
        ]  # (n_present, 3, H, W)
        batch.pixel_values = pixels.new_zeros((len(images), *pixels.shape[1:]))
        batch.pixel_values[present] = pixels
        batch.has_image[present] = True
