"""Options and helpers that several command modules share. Underscored: the command loader skips it."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="base experiment YAML (configs/)")]
OverrideOption = Annotated[
    list[str] | None, typer.Option("--override", "-o", help="section.field=value on top of the base, repeatable")
]


def command_line(head: str, **options) -> str:
    """The command line that reproduces a call (for the provenance line of a generated document)."""
    parts = [head]
    for name, value in options.items():
        if value is not None:
            parts.append(f"--{name.replace('_', '-')} {shlex.quote(str(value))}")
    return " ".join(parts)
