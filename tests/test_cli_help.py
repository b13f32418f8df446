"""The CLI teaches itself: every command's and group's --help ends with an example, closed sets are choices."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from cli import app


def _commands(command, path: tuple[str, ...] = ()):
    yield path
    if hasattr(command, "commands"):  # a group (typer builds on its own copy of click)
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


def test_the_tree_holds_every_command():
    names = {" ".join(p) for p in COMMANDS}
    assert {
        "train",
        "evaluate",
        "predict",
        "validate",
        "contexts",
        "run",
        "score",
        "bench shapley",
        "bench step",
        "experiment ablation",
        "experiment report",
        "experiment probe",
    } <= names


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "shapca")
def test_every_help_shows_an_example(path):
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    example = next((line for line in result.output.splitlines() if "Example: shapca" in line), None)
    assert example is not None, result.output
    # The example calls this very command (the root's and groups' examples call one of theirs).
    assert f"shapca {' '.join(path)}".strip() in example


@pytest.mark.parametrize(
    "args, option, choices",
    [
        (["validate", "--dataset", "twitter2019"], "--dataset", "'twitter2015', 'twitter2017', 'mnre', 'mnre-joint'"),
        (
            ["validate", "--dataset", "mnre", "--context-generator", "llava"],
            "--context-generator",
            "'blip2', 'mplug-owl', 'none'",
        ),
        (
            ["evaluate", "--model", "m", "--dataset", "twitter2017", "--split", "valid"],
            "--split",
            "'train', 'dev', 'test'",
        ),
        (["contexts", "--backend", "vllm"], "--backend", "'precomputed', 'hf', 'openai'"),
        (["experiment", "probe", "--model-uri", "m", "--generator", "llava"], "--generator", "'blip2', 'mplug-owl'"),
    ],
)
def test_closed_sets_are_choices_that_name_the_allowed_values(args, option, choices):
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert option in result.output and choices in result.output, result.output


def test_help_lists_the_choices():
    result = CliRunner().invoke(app, ["evaluate", "--help"], env={"COLUMNS": "200"})
    assert "<train|dev|test>" in result.output and "<twitter2015|twitter2017|mnre|mnre-joint>" in result.output
