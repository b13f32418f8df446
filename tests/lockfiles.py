"""Reading the locks that `make lock` writes (requirements/runtime.txt, requirements/dev.txt): one Pin per line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_LOCK = ROOT / "requirements" / "runtime.txt"
DEV_LOCK = ROOT / "requirements" / "dev.txt"


@dataclass(frozen=True)
class Pin:
    name: str  # canonical (PEP 503)
    version: str
    marker: str  # "" when it applies everywhere
    hashes: frozenset[str]


def read_lock(path: Path) -> dict[tuple[str, str], Pin]:
    """``{(name, marker): Pin}``; a universal lock may pin one name twice under different markers."""
    pins: dict[tuple[str, str], Pin] = {}
    logical = ""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = "" if line.lstrip().startswith("#") else line.strip()
        logical += " " + stripped.removesuffix("\\").strip()
        if stripped.endswith("\\"):
            continue
        text, logical = logical.strip(), ""
        if not text:
            continue
        requirement, *options = text.split(" --")
        req = Requirement(requirement)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version, (
            f"{path.name}:{number}: {requirement!r} is not pinned with =="
        )
        hashes = frozenset(o.removeprefix("hash=") for o in options if o.startswith("hash="))
        pin = Pin(canonicalize_name(req.name), specs[0].version, str(req.marker or ""), hashes)
        assert (pin.name, pin.marker) not in pins, f"{path.name}:{number}: {pin.name} pinned twice"
        pins[pin.name, pin.marker] = pin
    return pins


def versions(path: Path) -> dict[str, str]:
    """``{name: version}`` of the pins that apply on this interpreter and platform."""
    return {
        pin.name: pin.version
        for pin in read_lock(path).values()
        if not pin.marker or Requirement(f"x; {pin.marker}").marker.evaluate()
    }
