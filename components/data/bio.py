"""BIO tags: the tag list of a label set, and tags -> typed entity chunks. The one place the project reads BIO.

Chunking follows conlleval (what seqeval computes by default), and so does everything that turns tags into spans:
the reader's validation (a mention that starts with ``I-``), the model's decoded predictions and the entity metric.

    O B-PER I-PER O I-LOC B-ORG B-ORG I-PER   ->   PER [1, 3), LOC [4, 5), ORG [5, 6), ORG [6, 7), PER [7, 8)

An ``I-X`` after ``O`` or after a chunk of another type starts a chunk instead of being dropped. IOB1 and IOBES
sequences are read with the same rules (``E-``/``S-`` close a chunk), so gold files in either scheme score alike.
"""

from __future__ import annotations

from collections.abc import Sequence

from components.data.records import Span

OUTSIDE = "O"
# A typed entity chunk: ("PER", Span(0, 2)).
Entity = tuple[str, Span]


def bio_tags(entity_types: Sequence[str]) -> list[str]:
    """``["O", "B-T1", "I-T1", "B-T2", ...]`` in the order of ``entity_types``: the label ids of a tagger."""
    return [OUTSIDE] + [f"{prefix}-{t}" for t in entity_types for prefix in ("B", "I")]


def split_tag(tag: str, sentence: int = 0, position: int = 0) -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``; ``"O"`` -> ``("O", "")``. Anything else is an error naming where it is."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, sep, entity_type = tag.partition("-")
    if not sep or prefix not in {"B", "I", "E", "S"} or not entity_type:
        raise ValueError(
            f"sentence {sentence}, token {position}: tag {tag!r} is not 'O' or '<B|I|E|S>-<TYPE>' (e.g. 'B-PER')"
        )
    return prefix, entity_type


def bio_to_spans(tags: Sequence[str], sentence: int = 0) -> list[Entity]:
    """Entity chunks of one sentence, conlleval rules (IOB1/IOB2/IOBES tolerant), in order of their start.

    A chunk ends before a token when the previous token closed one (E, S), when the token begins a new one (B, S)
    or is outside (O), or when the type changes. A chunk starts at B or S, at an I/E that follows O or a closed
    chunk (E, S), and at any typed token whose type differs from the previous one: ``O I-PER`` is a PER chunk and
    ``B-PER I-LOC`` is two chunks. ``sentence`` only locates errors.
    """
    spans: list[Entity] = []
    prev_prefix, prev_type = OUTSIDE, ""
    start = 0
    # A trailing "O" closes a chunk that runs to the end of the sentence.
    for i, tag in enumerate([*tags, OUTSIDE]):
        prefix, entity_type = split_tag(tag, sentence, i)
        type_changed = prev_type != entity_type
        ends = prev_prefix != OUTSIDE and (prev_prefix in {"E", "S"} or prefix in {"B", "S", "O"} or type_changed)
        starts = prefix != OUTSIDE and (prefix in {"B", "S"} or prev_prefix in {"O", "E", "S"} or type_changed)
        if ends:
            spans.append((prev_type, Span(start, i)))
        if starts:
            start = i
        prev_prefix, prev_type = prefix, entity_type
    return spans
