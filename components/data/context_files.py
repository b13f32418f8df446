"""Readers for the published image contexts: text an LMM wrote about each tweet's image.

Two formats, both keyed by the image id without ".jpg":

- BLIP-2 captions, one a line:           ``<image_id>.jpg :<caption>``
- mPLUG-Owl descriptions, multi-line:    ``imgid:<image_id>###<first line>`` followed by continuation lines up to the
  next ``imgid:`` line; the description is every line joined with newlines, surrounding whitespace removed.

A duplicate image id with the same text is accepted (the files repeat some); with a different text it is a problem
that names both lines. In strict mode (the default) the first problems raise ``DataFormatError``; in lenient mode the
reader returns the contexts it could accept together with the problems, for validation to report.

``read_text_lines`` is the line source every reader in ``components.data`` shares: it streams a file, decodes each
line as UTF-8 on its own (so an undecodable byte is reported on its line, not for the whole file) and never drops one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, overload

from components.data.records import ContextSet, DataFormatError, ReadProblem

BLIP2_SEPARATOR = ".jpg :"
MPLUG_OWL_HEADER = "imgid:"
MPLUG_OWL_SEPARATOR = "###"


@dataclass(frozen=True)
class TextLine:
    """One line of a file: ``text`` without its line ending, or ``problem`` (and no text) when its bytes are not
    UTF-8."""

    number: int  # 1-based
    text: str
    problem: ReadProblem | None = None


def read_text_lines(path: Path) -> Iterator[TextLine]:
    """Stream ``path`` line by line (LF or CRLF endings), decoding each line as UTF-8 on its own."""
    path = Path(path)
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            raw = raw.removesuffix(b"\n").removesuffix(b"\r")
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark is not content
            try:
                yield TextLine(number, raw.decode("utf-8"))
            except UnicodeDecodeError as err:
                bad = raw[err.start : err.start + 1].hex()
                why = f"undecodable bytes at byte {err.start + 1} (0x{bad}): expected UTF-8 text"
                yield TextLine(number, "", ReadProblem(path, number, why))


@dataclass
class ContextReadResult:
    """What a lenient context read returns: the accepted contexts and the problems, in file order."""

    context_set: ContextSet
    problems: list[ReadProblem] = field(default_factory=list)

    def context_set_or_raise(self) -> ContextSet:
        """What a strict read returns: the contexts, or ``DataFormatError`` listing every problem."""
        if self.problems:
            raise DataFormatError(self.problems)
        return self.context_set


class _ContextCollector:
    """Accumulates image_id -> text and turns a conflicting duplicate into a problem naming both places."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}
        self.origin: dict[str, tuple[Path, int]] = {}
        self.problems: list[ReadProblem] = []

    def add(self, image_id: str, text: str, path: Path, line: int) -> None:
        if image_id in self.texts:
            if self.texts[image_id] != text:
                first_path, first_line = self.origin[image_id]
                where = f"line {first_line}" if first_path == path else f"{first_path}:{first_line}"
                self.problems.append(
                    ReadProblem(
                        path,
                        line,
                        f"duplicate image id {image_id!r} with a different text than at {where}: "
                        "expected each image id once, or repeated with the same text",
                    )
                )
            return
        self.texts[image_id] = text
        self.origin[image_id] = (path, line)

    def finish(self, generator: str, strict: bool) -> ContextSet | ContextReadResult:
        result = ContextReadResult(ContextSet(generator=generator, contexts=self.texts), self.problems)
        return result.context_set_or_raise() if strict else result


@overload
def read_blip2(path: Path, strict: Literal[True] = True) -> ContextSet: ...
@overload
def read_blip2(path: Path, strict: Literal[False]) -> ContextReadResult: ...
def read_blip2(path: Path, strict: bool = True) -> ContextSet | ContextReadResult:
    """Read BLIP-2 captions (``<image_id>.jpg :<caption>`` per line). An empty caption is kept as ``""``."""
    path = Path(path)
    collector = _ContextCollector()
    for line in read_text_lines(path):
        if line.problem is not None:
            collector.problems.append(line.problem)
            continue
        if line.text.strip() == "":
            continue  # blank lines separate nothing here, but a trailing one is common
        image_id, sep, caption = line.text.partition(BLIP2_SEPARATOR)
        if not sep or not image_id.strip():
            collector.problems.append(
                ReadProblem(path, line.number, f"expected '<image_id>.jpg :<caption>', found {line.text[:60]!r}")
            )
            continue
        collector.add(image_id.strip(), caption.strip(), path, line.number)
    return collector.finish("blip2", strict)


@overload
def read_mplug_owl(paths: Path | Iterable[Path], strict: Literal[True] = True) -> ContextSet: ...
@overload
def read_mplug_owl(paths: Path | Iterable[Path], strict: Literal[False]) -> ContextReadResult: ...
def read_mplug_owl(paths: Path | Iterable[Path], strict: bool = True) -> ContextSet | ContextReadResult:
    """Read mPLUG-Owl descriptions from one file or several (their union; duplicates are checked across files)."""
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    collector = _ContextCollector()
    for path in paths:
        # The description being read: (image_id, header line, its lines). None outside a description, e.g. after a
        # broken header, whose lines then belong to the problem already reported for it.
        current: tuple[str, int, list[str]] | None = None
        in_reported_block = False
        for line in read_text_lines(path):
            if line.problem is not None:
                collector.problems.append(line.problem)
                continue
            text = line.text
            if text.startswith(MPLUG_OWL_HEADER):
                if current is not None:
                    collector.add(current[0], "\n".join(current[2]).strip(), path, current[1])
                current, in_reported_block = None, False
                image_id, sep, first = text[len(MPLUG_OWL_HEADER) :].partition(MPLUG_OWL_SEPARATOR)
                if not sep or not image_id.strip():
                    why = f"expected 'imgid:<image_id>###<description>', found {text[:60]!r}"
                    collector.problems.append(ReadProblem(path, line.number, why))
                    in_reported_block = True
                    continue
                current = (image_id.strip(), line.number, [first])
            elif current is not None:
                current[2].append(text)
            elif text.strip() and not in_reported_block:
                why = f"text outside any description: expected an 'imgid:<image_id>###' line first, found {text[:60]!r}"
                collector.problems.append(ReadProblem(path, line.number, why))
                in_reported_block = True  # one problem per stray block, not one per line of it
        if current is not None:
            collector.add(current[0], "\n".join(current[2]).strip(), path, current[1])
    return collector.finish("mplug-owl", strict)
