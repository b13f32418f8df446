"""Word features: each word's original surface form, which the uncased encoders throw away, joined to the token
states the head reads (`model.word_features`; a character CNN as Ma & Hovy 2016, End-to-end Sequence Labeling via
Bi-directional LSTM-CNNs-CRF; word-shape classes as Lample et al. 2016 and Collins 2002).

Both packaged encoders lowercase (`do_lower_case`): `Obama`, `OBAMA` and `obama` reach them as the same ids, and tweets
mark entities by case, `@`, `#` and the like more than by anything else. So the processor turns each raw word (before
the tokenizer sees it) into

    word_chars   (B, W, L)  its UTF-8 bytes + 1 (0 = padding), L = the batch's longest word, at most max_word_bytes;
                            a longer word keeps its first and last max_word_bytes / 2 bytes (`@`, `#`, `http` and
                            suffixes survive, an elongation `soooo...ooo` keeps both ends)
    word_shapes  (B, W)     its word-shape class (SHAPES: case pattern, mention, hashtag, URL, digits, elongation)

and `WordFeatures` (trained from scratch, at lr_head) maps them to one vector per word, added to the state of the
word's first sub-token:

    e = CharEmbedding(word_chars)                        (B, W, L, c)     c = CHAR_DIM; padding embeds to 0
    f = max_L ReLU(Conv1d_k3(e))                         (B, W, F)        F = CHAR_FILTERS; "chars"
    s = ShapeEmbedding(word_shapes)                      (B, W, S)        S = SHAPE_DIM; "shape"
    x = Dropout(Linear([f; s]))                          (B, W, d)        zero-initialised: at the start H is unchanged
    H[b, word_index[b, w]] += x[b, w]                    for the words in the window (word_mask)

`model.word_features_at` says which H: "embeddings", the text encoder's input embeddings (the encoder contextualises
the surface form, so every state carries it: the RE head's entity markers, the joint head's spans, the pooled text)
or "states", its output states, read by the fusion and the head (the classic tagger's join; the RE head, which reads
only its marker tokens' states, then gets nothing from it).

The byte alphabet is fixed: no vocabulary is built from data, and every byte has an id. The processor saves
`ALPHABET`, `SHAPES` and its max_word_bytes in processor.json and refuses a file written with others.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

import torch
from torch import Tensor, nn

WordFeatureKind = Literal["none", "shape", "chars", "chars+shape"]
ALPHABET = "utf-8 bytes + 1, 0 = padding"  # what a processor.json's word_chars ids mean
MAX_WORD_BYTES = 20  # L: covers all but the longest words (URLs, long hashtags) whole; those keep both ends
CHAR_DIM, CHAR_FILTERS, CHAR_KERNEL = 32, 64, 3  # c, F and the CNN's window (Ma & Hovy: 30, 30, 3)
SHAPE_DIM = 16  # S

_URL = re.compile(r"^(https?://|www\.)|://", re.IGNORECASE)
_ELONGATED = re.compile(r"(.)\1\1")  # a character three times in a row: "soooo", "!!!"
_NUMBER = re.compile(r"^[+-]?[\d.,:/%]*\d[\d.,:/%]*$")  # 12, 3.5, 1,000, 10:30, 50%
# Word-shape classes, in id order (the order is saved with the processor: a new class goes at the end).
SHAPES = (
    "lower",  # obama
    "title",  # Obama
    "upper",  # OBAMA (two or more cased letters, all upper)
    "single-upper",  # I, A
    "mixed",  # iPhone, McDonald
    "mention",  # @obama
    "hashtag",  # #obama
    "url",  # http://t.co/..., www.x.com
    "number",  # 2017, 3.5, 10:30
    "alnum-digits",  # 4th, G20, mp3
    "punctuation",  # , ... !? (ASCII, no letter or digit)
    "other",  # emoji, symbols, uncased scripts
    "elongated",  # a cased word with a letter three times in a row: sooooo, YESSSS
)
_SHAPE_ID = {name: i for i, name in enumerate(SHAPES)}


def word_shape(word: str) -> str:
    """The word's class in SHAPES (a closed set: every string has one)."""
    if word.startswith("@") and len(word) > 1:
        return "mention"
    if word.startswith("#") and len(word) > 1:
        return "hashtag"
    if _URL.search(word):
        return "url"
    if _NUMBER.match(word):
        return "number"
    letters = [ch for ch in word if ch.isalpha()]
    if any(ch.isdigit() for ch in word) and letters:
        return "alnum-digits"
    cased = [ch for ch in letters if ch.lower() != ch.upper()]
    if not cased:
        if word.isascii() and not any(ch.isalnum() for ch in word):
            return "punctuation"
        return "other"
    if _ELONGATED.search(word.lower()):
        return "elongated"
    if all(ch.isupper() for ch in cased):
        return "upper" if len(cased) > 1 else "single-upper"
    if all(ch.islower() for ch in cased):
        return "lower"
    if cased[0].isupper() and all(ch.islower() for ch in cased[1:]):
        return "title"
    return "mixed"


def word_bytes(word: str, max_bytes: int) -> list[int]:
    """The word's UTF-8 bytes as ids (byte + 1), NFC-normalised; past max_bytes its first and last halves."""
    raw = unicodedata.normalize("NFC", word).encode("utf-8")
    if len(raw) > max_bytes:
        head = max_bytes - max_bytes // 2
        raw = raw[:head] + raw[len(raw) - max_bytes // 2 :]
    return [b + 1 for b in raw]


def word_feature_inputs(words: list[list[str]], kind: str, max_word_bytes: int) -> dict[str, Tensor]:
    """The batch's raw words (B lists, W = the longest) -> the `Batch` fields `kind` reads: word_chars (B, W, L)
    for "chars", word_shapes (B, W) for "shape". A padding word is all zeros (word_mask leaves it out)."""
    n_words = max(len(w) for w in words)
    out: dict[str, Tensor] = {}
    if "chars" in kind:
        ids = [[word_bytes(word, max_word_bytes) for word in sample] for sample in words]
        longest = max(len(w) for sample_ids in ids for w in sample_ids)
        chars = torch.zeros(len(words), n_words, longest, dtype=torch.long)  # (B, W, L)
        for b, sample_ids in enumerate(ids):
            for w, word_ids in enumerate(sample_ids):
                chars[b, w, : len(word_ids)] = torch.tensor(word_ids)
        out["word_chars"] = chars
    if "shape" in kind:
        shapes = torch.zeros(len(words), n_words, dtype=torch.long)  # (B, W)
        for b, sample in enumerate(words):
            shapes[b, : len(sample)] = torch.tensor([_SHAPE_ID[word_shape(word)] for word in sample])
        out["word_shapes"] = shapes
    return out


def add_at_words(states: Tensor, features: Tensor, word_index: Tensor, word_mask: Tensor) -> Tensor:
    """states (B, T, d) with features (B, W, d) added at each word's first sub-token (word_index (B, W)); the words
    outside the window (word_mask (B, W) False, whose index is 0) add nothing."""
    features = (features * word_mask[..., None]).to(states.dtype)  # (B, W, d)
    return states.scatter_add(1, word_index[..., None].expand_as(features), features)


class WordFeatures(nn.Module):
    """word_chars (B, W, L) and/or word_shapes (B, W) -> one vector per word (B, W, d) (the module docstring)."""

    def __init__(self, kind: str, dim: int, dropout: float):
        super().__init__()
        if kind not in ("shape", "chars", "chars+shape"):
            raise ValueError(f"model.word_features={kind!r}: expected shape, chars or chars+shape")
        self.kind = kind
        width = 0
        if "chars" in kind:
            self.char_embedding = nn.Embedding(256 + 1, CHAR_DIM, padding_idx=0)
            self.char_conv = nn.Conv1d(CHAR_DIM, CHAR_FILTERS, CHAR_KERNEL, padding=CHAR_KERNEL // 2)
            width += CHAR_FILTERS
        if "shape" in kind:
            self.shape_embedding = nn.Embedding(len(SHAPES), SHAPE_DIM)
            width += SHAPE_DIM
        self.project = nn.Linear(width, dim)
        nn.init.zeros_(self.project.weight)  # the pretrained states are untouched until training moves it
        nn.init.zeros_(self.project.bias)
        self.dropout = nn.Dropout(dropout)

    def _chars(self, chars: Tensor) -> Tensor:
        batch, words, length = chars.shape
        flat = chars.reshape(batch * words, length)  # (B*W, L)
        embedded = self.char_embedding(flat).transpose(1, 2)  # (B*W, c, L)
        conv = torch.relu(self.char_conv(embedded))  # (B*W, F, L)
        conv = conv * (flat != 0)[:, None, :]  # padding bytes take no part in the max (real values are >= 0)
        return conv.amax(dim=2).reshape(batch, words, -1)  # (B, W, F)

    def forward(self, word_chars: Tensor | None, word_shapes: Tensor | None) -> Tensor:
        parts = []
        if "chars" in self.kind:
            if word_chars is None:
                raise ValueError("model.word_features reads characters but the batch has no word_chars")
            parts.append(self._chars(word_chars))
        if "shape" in self.kind:
            if word_shapes is None:
                raise ValueError("model.word_features reads word shapes but the batch has no word_shapes")
            parts.append(self.shape_embedding(word_shapes))  # (B, W, S)
        return self.dropout(self.project(torch.cat(parts, dim=-1)))  # (B, W, d)
