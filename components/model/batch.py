"""Batches: the `Batch` tensors one forward pass needs, and the `Collator` that builds them from records.

Words and sub-tokens. Records hold words; the encoder sees sub-tokens. `word_index[b, w]` is the position of word w's
first sub-token (the state a tagger labels), `word_mask[b, w]` says whether word w made it into the encoder's window
(a word beyond `max_text_tokens` is not tagged, and the collator warns with the example id). Every word is at least one
sub-token, so at most `max_text_tokens` words can fit: the words after that are cut BEFORE any per-word work
(tokenizing, word tensors, labels, the CRF), so a text's cost is bounded by the window, not by its length. A word the tokenizer
turns into nothing (zero-width joiners, variation selectors) is encoded as the unknown token so that it keeps a state.

Context modes: "fusion" tokenizes each context as its own sequence for the context encoder; "concat" appends it to
the text as a second segment (text [SEP] context); "none" ignores contexts. A sample whose image has no context (or an
empty one) gets has_context = False, and one without an image has_image = False: the model closes those gates and
leaves those samples out of the alignment losses.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from components.data.records import JointExample, NerExample, ReExample, Span
from components.model.config import ShapCAConfig
from components.model.heads import ENTITY_TYPE, ordered_pairs, pair_tensors

# Entity markers of the MRE head: added to the tokenizer as special tokens, wrapped around the head and tail spans.
HEAD_START, HEAD_END, TAIL_START, TAIL_END = "<h>", "</h>", "<t>", "</t>"
MARKERS = [HEAD_START, HEAD_END, TAIL_START, TAIL_END]


@dataclass
class Batch:
    examples: list  # the records, in batch order (predictions are mapped back onto them)
    input_ids: Tensor  # (B, T) the text; in concat mode text [SEP] context
    attention_mask: Tensor  # (B, T)
    text_mask: Tensor  # (B, T) bool: tokens of the text segment (mean-pooled into the text vector)
    word_index: Tensor  # (B, W) first sub-token of each word, 0 where word_mask is False
    word_mask: Tensor  # (B, W) bool
    has_context: Tensor  # (B,) bool
    has_image: Tensor  # (B,) bool
    token_type_ids: Tensor | None = None  # (B, T) segment ids, where the tokenizer makes them
    context_input_ids: Tensor | None = None  # (B, T_c) fusion mode
    context_attention_mask: Tensor | None = None  # (B, T_c)
    context_segment_mask: Tensor | None = None  # (B, T) bool, concat mode: tokens of the context segment
    pixel_values: Tensor | None = None  # (B, 3, H, W); zeros for samples without an image; None if no sample has one
    tags: Tensor | None = None  # (B, W) tag ids (ner: typed BIO, joint: entity BIO)
    head_marker: Tensor | None = None  # (B,) re: position of <h>
    tail_marker: Tensor | None = None  # (B,) re: position of <t>
    relation: Tensor | None = None  # (B,) re: relation id
    pair_sample: Tensor | None = None  # (P,) joint: the sample each gold entity pair belongs to
    pair_head: Tensor | None = None  # (P, 2) joint: head span [start, end) in words
    pair_tail: Tensor | None = None  # (P, 2)
    pair_label: Tensor | None = None  # (P,) joint: relation id, 0 = no relation

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def example_ids(self) -> list[str]:
        return [ex.id for ex in self.examples]

    def to(self, device: torch.device | str) -> Batch:
        moved = {
            f.name: value.to(device)
            for f in fields(self)
            if isinstance(value := getattr(self, f.name), Tensor)
        }
        return replace(self, **moved)


def _check_span(example, span: Span, what: str) -> None:
    if not span.fits(len(example.tokens)):
        raise ValueError(
            f"example {example.id}: {what} {span} is not a non-empty span inside its {len(example.tokens)} tokens"
        )


def _mark_entities(example: ReExample) -> list[str]:
    """Words with <h> ... </h> and <t> ... </t> around the head and tail (closing markers first where they meet)."""
    _check_span(example, example.head, "head")
    _check_span(example, example.tail, "tail")
    before: dict[int, list[str]] = {}
    for position, marker in [
        (example.head.end, HEAD_END), (example.tail.end, TAIL_END),
        (example.head.start, HEAD_START), (example.tail.start, TAIL_START),
    ]:
        before.setdefault(position, []).append(marker)
    words: list[str] = []
    for i in range(len(example.tokens) + 1):
        words += before.get(i, [])
        if i < len(example.tokens):
            words.append(example.tokens[i])
    return words


class Collator:
    """Records (+ contexts, + images) -> Batch. A plain callable: `DataLoader(..., collate_fn=collator)` works, with
    the contexts and images given at construction; a call may override them."""

    def __init__(
        self,
        config: ShapCAConfig,
        task: str,
        tokenizer,
        tags: list[str] | None = None,  # ner / joint: BIO tag names
        relations: list[str] | None = None,  # re: relation labels; joint: pair classes (NO_RELATION first)
        context_tokenizer=None,  # fusion mode; defaults to the text tokenizer
        image_processor=None,  # None: images are not used
        contexts: Mapping[str, str] | None = None,
        images: Mapping | None = None,
    ):
        self.config, self.task, self.tokenizer = config, task, tokenizer
        self.context_tokenizer = context_tokenizer or tokenizer
        self.image_processor = image_processor
        self.tag_ids = {t: i for i, t in enumerate(tags or [])}
        self.relation_ids = {r: i for i, r in enumerate(relations or [])}
        self.contexts, self.images = contexts, images

    # -- words -------------------------------------------------------------------------------------------------
    def _words(self, example) -> list[str]:
        """The words the encoder may see: at most max_text_tokens of them (see the module docstring)."""
        if not example.tokens:
            raise ValueError(f"example {example.id}: has no tokens")
        limit = self.config.max_text_tokens
        if self.task == "re":
            return _mark_entities(example)[:limit]  # a marker cut here is reported by _add_relations
        return list(example.tokens[:limit])

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
    def __call__(
        self, examples: list, contexts: Mapping[str, str] | None = None, images: Mapping | None = None
    ) -> Batch:
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        cfg = self.config
        contexts = contexts if contexts is not None else self.contexts
        images = images if images is not None else self.images
        words = self._encodable([self._words(ex) for ex in examples])
        context_text = [(contexts or {}).get(ex.image_id, "") or "" for ex in examples]
        has_context = torch.tensor([cfg.context_mode != "none" and bool(c.strip()) for c in context_text])

        if cfg.context_mode == "concat":
            enc = self.tokenizer(
                words, [c.split() for c in context_text], is_split_into_words=True, truncation=True,
                max_length=cfg.max_text_tokens + cfg.max_context_tokens, padding=True, return_tensors="pt",
            )
        else:
            enc = self.tokenizer(
                words, is_split_into_words=True, truncation=True, max_length=cfg.max_text_tokens,
                padding=True, return_tensors="pt",
            )
        segments = [enc.sequence_ids(b) for b in range(len(examples))]
        batch = Batch(
            examples=list(examples),
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            token_type_ids=enc.get("token_type_ids"),
            text_mask=enc["attention_mask"].bool(),  # all real tokens, [CLS] and [SEP] too, as MiniLM pools
            has_context=has_context,
            has_image=torch.zeros(len(examples), dtype=torch.bool),
            **self._word_positions(examples, words, enc),
        )
        if cfg.context_mode == "concat":
            batch.text_mask = torch.tensor([[s == 0 for s in seg] for seg in segments])
            batch.context_segment_mask = torch.tensor([[s == 1 for s in seg] for seg in segments])
        elif cfg.context_mode == "fusion":
            ctx = self.context_tokenizer(
                context_text, truncation=True, max_length=cfg.max_context_tokens, padding=True, return_tensors="pt"
            )
            batch.context_input_ids, batch.context_attention_mask = ctx["input_ids"], ctx["attention_mask"]
        if self.image_processor is not None and images:
            self._add_images(batch, examples, images)
        self._add_labels(batch, examples, enc)
        return batch

    def _word_positions(self, examples, words, enc) -> dict[str, Tensor]:
        n_words = max(len(w) for w in words)
        word_index = torch.zeros(len(examples), n_words, dtype=torch.long)
        word_mask = torch.zeros(len(examples), n_words, dtype=torch.bool)
        for b, example in enumerate(examples):
            for position, (word, segment) in enumerate(zip(enc.word_ids(b), enc.sequence_ids(b))):
                if word is not None and segment == 0 and not word_mask[b, word]:
                    word_index[b, word], word_mask[b, word] = position, True
            lost = len(example.tokens) - int(word_mask[b].sum())
            if lost and self.task != "re":
                warnings.warn(
                    f"example {example.id}: its last {lost} words fall beyond model.max_text_tokens="
                    f"{self.config.max_text_tokens}; they get no state and are predicted O", stacklevel=3,
                )
        return {"word_index": word_index, "word_mask": word_mask}

    def _add_images(self, batch: Batch, examples, images: Mapping) -> None:
        present = [b for b, ex in enumerate(examples) if images.get(ex.image_id) is not None]
        if not present:
            return
        pixels = self.image_processor(
            images=[images[examples[b].image_id].convert("RGB") for b in present], return_tensors="pt"
        )["pixel_values"]  # (n_present, 3, H, W)
        batch.pixel_values = pixels.new_zeros((len(examples), *pixels.shape[1:]))
        batch.pixel_values[present] = pixels
        batch.has_image[present] = True

    # -- labels ------------------------------------------------------------------------------------------------
    def _tag_id(self, example, position: int, tag: str) -> int:
        if tag not in self.tag_ids:
            raise ValueError(
                f"example {example.id}: tag {tag!r} at token {position} is not one of {list(self.tag_ids)}"
            )
        return self.tag_ids[tag]

    def _relation_id(self, example, relation: str) -> int:
        if relation not in self.relation_ids:
            raise ValueError(
                f"example {example.id}: relation {relation!r} is not one of the model's labels "
                f"{list(self.relation_ids)}"
            )
        return self.relation_ids[relation]

    def _add_labels(self, batch: Batch, examples, enc) -> None:
        if self.task == "ner":
            batch.tags = torch.zeros_like(batch.word_index)
            width = batch.word_index.shape[1]
            for b, ex in enumerate(examples):
                if not isinstance(ex, NerExample) or len(ex.tags) != len(ex.tokens):
                    raise ValueError(f"example {ex.id}: an NER example needs one tag per token")
                ids = [self._tag_id(ex, i, t) for i, t in enumerate(ex.tags)]
                batch.tags[b, : min(len(ids), width)] = torch.tensor(ids[:width])
        elif self.task == "re":
            self._add_relations(batch, examples, enc)
        else:
            self._add_entities_and_pairs(batch, examples)

    def _add_relations(self, batch: Batch, examples, enc) -> None:
        head_id, tail_id = self.tokenizer.convert_tokens_to_ids([HEAD_START, TAIL_START])
        ids = enc["input_ids"]
        head, tail = [], []
        for b, ex in enumerate(examples):
            if not isinstance(ex, ReExample):
                raise ValueError(f"example {ex.id}: the re task needs ReExample records, got {type(ex).__name__}")
            found = [(ids[b] == marker).nonzero() for marker in (head_id, tail_id)]
            if not all(len(f) for f in found):
                raise ValueError(
                    f"example {ex.id}: an entity marker falls beyond model.max_text_tokens="
                    f"{self.config.max_text_tokens}; raise it to read this sentence"
                )
            head.append(int(found[0][0]))
            tail.append(int(found[1][0]))
        batch.head_marker, batch.tail_marker = torch.tensor(head), torch.tensor(tail)
        batch.relation = torch.tensor([self._relation_id(ex, ex.relation) for ex in examples])

    def _add_entities_and_pairs(self, batch: Batch, examples) -> None:
        """Entity BIO tags (a span overlapping an earlier one is not tagged: BIO cannot hold both) and every ordered
        pair of gold entities with its relation (the first triple's where a pair has several), 0 where none."""
        batch.tags = torch.zeros_like(batch.word_index)
        begin, inside = self.tag_ids[f"B-{ENTITY_TYPE}"], self.tag_ids[f"I-{ENTITY_TYPE}"]
        visible, relations = [], []  # per sample: spans with word states, (head, tail) -> relation id
        for b, ex in enumerate(examples):
            if not isinstance(ex, JointExample):
                raise ValueError(f"example {ex.id}: the joint task needs JointExample records, got {type(ex).__name__}")
            relation_of: dict[tuple[Span, Span], int] = {}
            for triple in ex.triples:
                relation_of.setdefault((triple.head, triple.tail), self._relation_id(ex, triple.relation))
            spans = {*ex.entities, *(s for t in ex.triples for s in (t.head, t.tail))}
            spans = sorted(spans, key=lambda s: (s.start, s.end))
            taken = torch.zeros(len(ex.tokens), dtype=torch.bool)
            row = torch.zeros(len(ex.tokens), dtype=torch.long)
            for span in spans:
                _check_span(ex, span, "entity")
                if not taken[span.start : span.end].any():
                    taken[span.start : span.end] = True
                    row[span.start] = begin
                    row[span.start + 1 : span.end] = inside
            width = min(len(row), batch.tags.shape[1])  # words cut at the window have no column
            batch.tags[b, :width] = row[:width]
            kept = int(batch.word_mask[b].sum())  # spans past the window have no word states
            visible.append([s for s in spans if s.end <= kept])
            relations.append(relation_of)
        pairs = ordered_pairs(visible)
        batch.pair_sample, batch.pair_head, batch.pair_tail = pair_tensors(pairs)
        batch.pair_label = torch.tensor([relations[b].get((h, t), 0) for b, h, t in pairs], dtype=torch.long)

