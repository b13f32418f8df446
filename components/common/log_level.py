"""The project's one log-level switch: `shapca --log-level LEVEL` or the environment variable ``SHAPCA_LOG_LEVEL``.

It sets the level of the project's own loggers: ``components`` (the library) and ``cli``; other libraries keep theirs.
The CLI attaches a stderr handler at that level and writes the level back to the environment, so what it starts
(torchrun ranks, an in-process flow) sees the same level; the flows forward the library's records to Prefect at it
(flows/progress.py). Unset: INFO, the library's progress lines.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

LOG_LEVEL_ENV = "SHAPCA_LOG_LEVEL"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DEFAULT_LOG_LEVEL = "info"
LIBRARY_LOGGER = "components"
PROJECT_LOGGERS = (LIBRARY_LOGGER, "cli")


def parse_log_level(value: str, source: str = LOG_LEVEL_ENV) -> int:
    """The ``logging`` level for a name of :data:`LOG_LEVELS`, any case; a ValueError naming ``source`` otherwise."""
    name = value.strip().lower()
    if name not in LOG_LEVELS:
        raise ValueError(f"{source}={value!r} is not a log level; expected one of {', '.join(LOG_LEVELS)} (any case)")
    return logging.getLevelNamesMapping()[name.upper()]


def log_level_from_env(environ: Mapping[str, str] | None = None) -> int:
    """The level ``SHAPCA_LOG_LEVEL`` names, INFO when it is unset or empty."""
    raw = (os.environ if environ is None else environ).get(LOG_LEVEL_ENV, "")
    return parse_log_level(raw) if raw.strip() else parse_log_level(DEFAULT_LOG_LEVEL)
