"""``mnre-joint``: MNRE rebuilt as joint entity-relation extraction sentences (a stand-in for JMERE, whose data is not
published where we can reach it).

MNRE lists one (head, tail) pair per instance, so a sentence appears once per pair. Grouping the instances on
(tokens, image_id) gives back the sentence; it carries every span any of its instances marks (sorted by position)
and every non-None relation as a (head, relation, tail) triple in file order, duplicates removed. Sentences keep the
order in which they first appear, and their ids are ``<split>-<n>`` in that order, so they are stable across reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from components.data.records import ReadResult
from components.tasks.joint.records import JointExample, Triple
from components.tasks.re.mnre import read_mnre
from components.tasks.re.records import NO_RELATION, ReExample


def group_sentences(
    instances: Iterable[ReExample], split: str = "train", limit: int | None = None
) -> list[JointExample]:
    """Group MNRE instances into sentences; ``limit`` keeps the first that many sentences."""
    groups: dict[tuple[tuple[str, ...], str], list[ReExample]] = {}
    for instance in instances:
        groups.setdefault((tuple(instance.tokens), instance.image_id), []).append(instance)
    sentences = []
    for n, ((tokens, image_id), members) in enumerate(groups.items()):
        if limit is not None and n >= limit:
            break
        entities = sorted({span for m in members for span in (m.head, m.tail)}, key=lambda s: (s.start, s.end))
        triples = list(dict.fromkeys(Triple(m.head, m.relation, m.tail) for m in members if m.relation != NO_RELATION))
        sentences.append(JointExample(f"{split}-{n}", image_id, list(tokens), entities, triples))
    return sentences


def read_joint(
    path: Path,
    split: str = "train",
    relations: Iterable[str] | None = None,
    limit: int | None = None,
    strict: bool = True,
) -> list[JointExample] | ReadResult:
    """Read an MNRE split file as joint sentences. Problems are the MNRE reader's (an instance it could not read
    leaves its pair out of the sentence, and is reported). ``relations`` is the full MNRE set, None included."""
    read = read_mnre(path, split=split, relations=relations, strict=False)
    result = ReadResult(examples=group_sentences(read.examples, split=split, limit=limit), problems=read.problems)
    return result.examples_or_raise() if strict else result
