"""The one reader of a DVC pointer file (`data.dvc`, committed to git): which md5 and path it records.

A pointer may track several outputs; the one whose path is ``data`` is the benchmark data, and a pointer with a
single output means that one. Errors name the file and the field, and are ValueError (FileNotFoundError when the
pointer is missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DATA_OUTPUT = "data"


@dataclass(frozen=True)
class DvcOutput:
    md5: str  # as recorded: "<md5>.dir" for a directory
    path: Path  # the output, resolved next to the pointer

    @property
    def dir_md5(self) -> str:
        """The md5 without DVC's ``.dir`` suffix."""
        return self.md5.removesuffix(".dir")


def read_dvc_pointer(pointer: str | Path) -> DvcOutput:
    """The data output of ``pointer``; raises FileNotFoundError when it is missing, ValueError when malformed."""
    pointer = Path(pointer)
    if not pointer.is_file():
        raise FileNotFoundError(f"{pointer}: no DVC pointer file; the data version comes from its outs[].md5")
    try:
        raw: Any = yaml.safe_load(pointer.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{pointer}: not valid YAML ({exc})") from exc
    outs = raw.get("outs") if isinstance(raw, dict) else None
    if not isinstance(outs, list) or not outs:
        raise ValueError(f"{pointer}: expected a non-empty 'outs' list (DVC pointer format)")
    named = [o for o in outs if isinstance(o, dict) and o.get("path") == DATA_OUTPUT]
    if not named and len(outs) > 1:
        raise ValueError(f"{pointer}: {len(outs)} outputs and none with path {DATA_OUTPUT!r}")
    chosen = named[0] if named else outs[0]
    md5 = chosen.get("md5") if isinstance(chosen, dict) else None
    path = chosen.get("path") if isinstance(chosen, dict) else None
    if not isinstance(md5, str) or not md5:
        raise ValueError(f"{pointer}: 'outs[].md5' missing or not a string for output {chosen!r}")
    if not isinstance(path, str) or not path:
        raise ValueError(f"{pointer}: 'outs[].path' missing or not a string for output {chosen!r}")
    return DvcOutput(md5=md5, path=pointer.parent / path)
