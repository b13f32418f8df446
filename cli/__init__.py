"""The `shapca` command. Each sibling module adds its commands through `add_commands(app)`; heavy imports stay inside
the command functions so that `shapca --help` is instant."""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import platform
from typing import Annotated, Literal

import typer

from cli._version import version_line
from components.common.log_level import LOG_LEVEL_ENV, PROJECT_LOGGERS, parse_log_level
from components.common.project_root import find_project_root

LogLevel = Literal["debug", "info", "warning", "error", "critical"]  # components/common/log_level.py LOG_LEVELS

app = typer.Typer(
    help="Shap-CA: train, track and serve multimodal information extraction.",
    no_args_is_help=True,
    epilog="Example: shapca validate --dataset twitter2017 && shapca train -o train.epochs=1  "
    "(every command's --help ends with an example)",
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(version_line())
        raise typer.Exit()


def _log_to_stderr(ctx: typer.Context, level: int) -> None:
    """A stderr handler on the project's loggers, at ``level``, for as long as the command runs; other libraries keep
    their own levels. Taken off again when the command ends (tests invoke the app many times in one process)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    loggers = [logging.getLogger(name) for name in PROJECT_LOGGERS]
    previous = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(level)

    def restore() -> None:
        for logger, old_level in zip(loggers, previous, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(old_level)

    ctx.call_on_close(restore)


@app.callback()
def main(
    ctx: typer.Context,
    log_level: Annotated[
        LogLevel,
        typer.Option(
            "--log-level",
            envvar=LOG_LEVEL_ENV,
            case_sensitive=False,
            help="level of the project's own log lines (the library's progress lines are INFO)",
        ),
    ] = "info",
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and git commit, then exit"
        ),
    ] = False,
) -> None:
    """Shap-CA: train, track and serve multimodal information extraction."""
    level = parse_log_level(log_level, "--log-level")
    source = ctx.get_parameter_source("log_level")  # typer's own copy of click's ParameterSource
    if source is not None and source.name == "COMMANDLINE":
        os.environ[LOG_LEVEL_ENV] = log_level  # what this command starts (torchrun ranks, in-process flows) follows it
    _log_to_stderr(ctx, level)
    log = logging.getLogger("cli")
    if log.isEnabledFor(logging.DEBUG):
        root = find_project_root()
        log.debug("%s on python %s, project root %s", version_line(), platform.python_version(), root)


for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _module.name.startswith("_"):  # __main__ runs the app; it registers nothing
        continue
    importlib.import_module(f"{__name__}.{_module.name}").add_commands(app)
