"""The `shapca` command. Each sibling module adds its commands through `register(app)`; heavy imports stay inside
the command functions so that `shapca --help` is instant."""

from __future__ import annotations

import importlib
import pkgutil

import typer

app = typer.Typer(help="Shap-CA: train, track and serve multimodal information extraction.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """Shap-CA: train, track and serve multimodal information extraction."""

for _module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _module.name.startswith("_"):  # __main__ runs the app; it registers nothing
        continue
    importlib.import_module(f"{__name__}.{_module.name}").register(app)
