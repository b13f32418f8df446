"""The `shapca` command. Each sibling module adds its commands through `add_commands(app)`; heavy imports stay inside
the command functions so that `shapca --help` is instant."""

from __future__ import annotations

import importlib
import logging
import pkgutil

import typer

app = typer.Typer(
    help="Shap-CA: train, track and serve multimodal information extraction.",
    no_args_is_help=True,
    epilog="Example: shapca validate --dataset twitter2017 && shapca train -o train.epochs=1  "
    "(every command's --help ends with an example)",
)


@app.callback()
def main() -> None:
    """Shap-CA: train, track and serve multimodal information extraction."""
    # The library's own progress lines (epoch summaries, resumes, skipped images) at INFO; other libraries as they are.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    library = logging.getLogger("components")
    library.addHandler(handler)
    library.setLevel(logging.INFO)


for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _module.name.startswith("_"):  # __main__ runs the app; it registers nothing
        continue
    importlib.import_module(f"{__name__}.{_module.name}").add_commands(app)
