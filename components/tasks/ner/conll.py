"""Reader for the Twitter-2015 / Twitter-2017 MNER files (CoNLL with image ids), as published with UMT:

    IMGID:1015799
    George<TAB>B-PER
    Zimmerman<TAB>I-PER
    got<TAB>O
    <blank line>

A tweet is an ``IMGID:`` line followed by ``token<TAB>tag`` lines; blank lines separate tweets. Tags are kept as
written: the original type names (OTHER in 2015, MISC in 2017) and the BIO sequences that start with ``I-`` (noise in
the originals, counted by validation, never repaired here). Tokens are kept byte for byte (a lone non-breaking space
is a token in twitter2015/valid).

A tweet with any problem is left out of the examples and each of its problems is reported with its line. Example ids
are ``<split>-<n>`` with n the tweet's position in the file, so that they stay put when a broken tweet is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, overload

from components.data.bio import OUTSIDE, bio_tags
from components.data.context_files import read_text_lines
from components.data.records import ReadProblem, ReadResult
from components.tasks.ner.records import NerExample

IMGID_PREFIX = "IMGID:"


def _tag_problem(tag: str, allowed: set[str] | None) -> str | None:
    """Why ``tag`` is not acceptable, or None. Without a label set only the BIO form is checked."""
    if allowed is not None:
        if tag in allowed:
            return None
        return f"unknown tag {tag!r}: expected one of {', '.join(sorted(allowed, key=_tag_order))}"
    if tag == OUTSIDE or (tag[:2] in ("B-", "I-") and len(tag) > 2):
        return None
    return f"malformed tag {tag!r}: expected 'O', 'B-<type>' or 'I-<type>'"


def _tag_order(tag: str) -> tuple[str, str]:
    return (tag[2:], tag[:1]) if tag != OUTSIDE else ("", "")


@overload
def read_conll(
    path: Path,
    split: str = ...,
    entity_types: Sequence[str] | None = ...,
    limit: int | None = ...,
    strict: Literal[True] = ...,
) -> list[NerExample]: ...
@overload
def read_conll(
    path: Path,
    split: str = ...,
    entity_types: Sequence[str] | None = ...,
    limit: int | None = ...,
    *,
    strict: Literal[False],
) -> ReadResult: ...
def read_conll(
    path: Path,
    split: str = "train",
    entity_types: Sequence[str] | None = None,
    limit: int | None = None,
    strict: bool = True,
) -> list[NerExample] | ReadResult:
    """Read one split file. ``entity_types`` (e.g. PER LOC ORG OTHER) makes any other tag a problem.

    ``limit`` stops after that many tweets (counted in the file, broken ones included). Strict mode raises
    ``DataFormatError`` listing every problem; lenient mode returns a ``ReadResult`` with the good tweets and them.
    """
    path = Path(path)
    allowed = set(bio_tags(entity_types)) if entity_types is not None else None
    result = ReadResult()

    # The tweet being read; its problems keep it out of the examples.
    index = -1
    image_id = ""
    header_line = 0
    tokens: list[str] = []
    tags: list[str] = []
    tweet_problems: list[ReadProblem] = []
    in_tweet = False
    stray_reported = False  # token lines outside a tweet: one problem per block of them

    def close_tweet() -> None:
        if not in_tweet:
            return
        if not tokens and not tweet_problems:
            why = "tweet has no token lines: expected 'token<TAB>tag' lines after IMGID"
            tweet_problems.append(ReadProblem(path, header_line, why))
        if tweet_problems:
            result.problems.extend(tweet_problems)
        else:
            result.examples.append(NerExample(f"{split}-{index}", image_id, list(tokens), list(tags)))

    for line in read_text_lines(path):
        if line.problem is not None:
            if in_tweet:
                tweet_problems.append(line.problem)
            else:
                result.problems.append(line.problem)
            continue
        text = line.text
        if text.startswith(IMGID_PREFIX):
            close_tweet()
            if limit is not None and index + 1 >= limit:
                in_tweet = False
                break
            index += 1
            in_tweet, stray_reported = True, False
            image_id, header_line = text[len(IMGID_PREFIX) :].strip(), line.number
            tokens, tags, tweet_problems = [], [], []
            if not image_id:
                tweet_problems.append(ReadProblem(path, line.number, "empty image id: expected 'IMGID:<image id>'"))
            continue
        if text == "" or ("\t" not in text and text.strip() == ""):
            close_tweet()
            in_tweet, stray_reported = False, False
            continue
        if not in_tweet:
            if not stray_reported:
                why = f"token line outside a tweet: expected an 'IMGID:<id>' line first, found {text[:60]!r}"
                result.problems.append(ReadProblem(path, line.number, why))
                stray_reported = True
            continue
        fields = text.split("\t")
        if len(fields) != 2:
            found = "no tab" if len(fields) == 1 else f"{len(fields) - 1} tabs"
            why = f"expected 'token<TAB>tag', found {found} in {text[:60]!r}"
            tweet_problems.append(ReadProblem(path, line.number, why))
            continue
        token, tag = fields
        if token == "":
            why = f"empty token before the tab: expected 'token<TAB>tag', found {text!r}"
            tweet_problems.append(ReadProblem(path, line.number, why))
            continue
        tag_problem = _tag_problem(tag, allowed)
        if tag_problem is not None:
            tweet_problems.append(ReadProblem(path, line.number, tag_problem))
            continue
        tokens.append(token)
        tags.append(tag)
    close_tweet()

    return result.examples_or_raise() if strict else result
