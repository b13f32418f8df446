"""Reader for MNRE (v2) instances: one Python-literal dict per line, as published in thecharm/MNRE (mnre_txt):

    {'token': ['RT', '@WLWT', ':', 'Bill', 'Cosby', ...], 'h': {'name': 'Bill Cosby', 'pos': [3, 5]},
     't': {'name': 'Hollywood Walk of Fame', 'pos': [8, 12]}, 'img_id': 'twitter_stream_2018_09_04_11_0_2_240.jpg',
     'relation': '/per/misc/present_in'}

Lines are parsed with ``ast.literal_eval`` (they use single quotes, so they are not JSON; ``eval`` would run code).
``pos`` is a half-open token span, and ``name`` must equal the covered tokens joined by spaces. Example ids are
``<split>-<n>`` with n the instance's position among the file's non-blank lines.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, overload

from components.data.context_files import read_text_lines
from components.data.records import ReadProblem, ReadResult, Span
from components.tasks.re.records import ReExample

REQUIRED_KEYS = ("token", "h", "t", "img_id", "relation")


def _parse_span(value: Any, role: str, tokens: list[str]) -> tuple[Span | None, str | None]:
    """The span of entity ``role`` ("head" for h, "tail" for t), or why it is not acceptable."""
    if not isinstance(value, dict) or "pos" not in value or "name" not in value:
        return None, f"{role} entity: expected a dict with 'name' and 'pos', found {value!r:.80}"
    pos = value["pos"]
    if (
        not isinstance(pos, (list, tuple))
        or len(pos) != 2
        or not all(isinstance(p, int) and not isinstance(p, bool) for p in pos)
    ):
        return None, f"{role} entity: expected 'pos' to be [start, end] integers, found {pos!r:.60}"
    start, end = pos
    if not Span(start, end).fits(len(tokens)):
        return None, (
            f"{role} span [{start}, {end}) outside the sentence: "
            f"expected 0 <= start < end <= {len(tokens)} (its token count)"
        )
    covered = " ".join(tokens[start:end])
    if value["name"] != covered:
        why = f"{role} name {value['name']!r} differs from the tokens its span [{start}, {end}) covers: {covered!r}"
        return None, why
    return Span(start, end), None


def parse_mnre_line(text: str, relations: Iterable[str] | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """Parse one line into the fields of a ``ReExample`` (without id), or say what is wrong with it."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as err:
        return None, f"not a Python literal ({type(err).__name__}: {err}): expected a dict per line"
    if not isinstance(value, dict):
        return None, f"expected a dict with keys {', '.join(REQUIRED_KEYS)}, found a {type(value).__name__}"
    missing = [k for k in REQUIRED_KEYS if k not in value]
    if missing:
        return None, f"missing key(s) {', '.join(missing)}: expected keys {', '.join(REQUIRED_KEYS)}"
    tokens = value["token"]
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t for t in tokens):
        return None, "'token': expected a non-empty list of non-empty strings"
    head, why = _parse_span(value["h"], "head", tokens)
    if why:
        return None, why
    tail, why = _parse_span(value["t"], "tail", tokens)
    if why:
        return None, why
    img_id = value["img_id"]
    if not isinstance(img_id, str) or not img_id.strip():
        return None, f"'img_id': expected a file name such as 'twitter_19_31_16_6.jpg', found {img_id!r}"
    relation = value["relation"]
    if not isinstance(relation, str):
        return None, f"'relation': expected a string, found {relation!r}"
    if relations is not None and relation not in set(relations):
        return None, f"unknown relation {relation!r}: expected one of the {len(set(relations))} MNRE relations"
    image_id = img_id.strip().removesuffix(".jpg")
    return dict(image_id=image_id, tokens=tokens, head=head, tail=tail, relation=relation), None


@overload
def read_mnre(
    path: Path,
    split: str = ...,
    relations: Iterable[str] | None = ...,
    limit: int | None = ...,
    strict: Literal[True] = ...,
) -> list[ReExample]: ...
@overload
def read_mnre(
    path: Path,
    split: str = ...,
    relations: Iterable[str] | None = ...,
    limit: int | None = ...,
    *,
    strict: Literal[False],
) -> ReadResult: ...
def read_mnre(
    path: Path,
    split: str = "train",
    relations: Iterable[str] | None = None,
    limit: int | None = None,
    strict: bool = True,
) -> list[ReExample] | ReadResult:
    """Read one MNRE split file; ``relations`` (the label set) makes any other relation a problem.

    ``limit`` stops after that many instances. Strict mode raises ``DataFormatError`` listing every problem; lenient
    mode returns a ``ReadResult`` with the good instances and the problems.
    """
    path = Path(path)
    relation_set = frozenset(relations) if relations is not None else None
    result = ReadResult()
    index = -1
    for line in read_text_lines(path):
        if line.problem is None and line.text.strip() == "":
            continue  # the files end with a newline; a blank line holds no instance
        index += 1
        if limit is not None and index >= limit:
            break
        if line.problem is not None:
            result.problems.append(line.problem)
            continue
        fields, why = parse_mnre_line(line.text, relation_set)
        if fields is None:  # then `why` says what is wrong
            result.problems.append(ReadProblem(path, line.number, str(why)))
            continue
        result.examples.append(ReExample(id=f"{split}-{index}", **fields))
    return result.examples_or_raise() if strict else result
