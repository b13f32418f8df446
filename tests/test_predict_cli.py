"""`shapca predict` input errors: each names the file and line and comes before any model is loaded (the model URI
given here does not exist, so reaching the load would fail differently)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cli import app
from components.serving.limits import ServingLimits


def _predict(tmp_path, content: bytes):
    source = tmp_path / "in.jsonl"
    source.write_bytes(content)
    result = CliRunner().invoke(
        app,
        [
            "predict",
            "--model",
            "models:/does-not-exist/1",
            "--input",
            str(source),
            "--output",
            str(tmp_path / "out.jsonl"),
        ],
    )
    return source, result


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', ":2: not valid UTF-8 (byte 0xe9 at column 14)"),
        (b"", ": no input: expected one JSON object per line"),
        (b"\n  \n", ": no input: expected one JSON object per line"),
        (b'{"txt": "a"}\n{"body": "b"}\n', ": no line has a 'text' field (line 1 has ['txt'])"),
        (b'{"text": "a"}\n[1, 2]\n', ":2: expected a JSON object, got list"),
        (b'{"text": "a"\n', ":1: not valid JSON"),
    ],
)
def test_bad_input_is_named_by_file_and_line(tmp_path, content, message):
    source, result = _predict(tmp_path, content)
    assert result.exit_code == 2
    flat = " ".join(result.output.replace("│", " ").split())  # typer's box wraps long messages
    assert f"{source.name}{message}".replace(" ", "") in flat.replace(" ", ""), result.output


def test_an_oversized_line_is_refused_without_reading_the_model(tmp_path):
    size = 5 * 1024 * 1024
    source, result = _predict(tmp_path, b'{"text": "' + b"a" * size + b'"}\n')
    assert result.exit_code == 2
    flat = "".join(result.output.replace("│", " ").split())
    assert f"{source.name}:1:lineis{size + 13}bytes,overthelimitof" in flat, result.output
    assert ServingLimits().max_field_chars * 8 < size  # the limit is the model's own, not this test's


def test_the_input_checks_load_no_model_code(tmp_path, project_root):
    """The checks before the load read the serving limits only: no task heads, so no torch (a bad file fails fast)."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "Obama visits Paris"}\n', encoding="utf-8")
    code = (
        "import sys; from pathlib import Path; from cli.train import read_prediction_rows; "
        f"rows = read_prediction_rows(Path({str(source)!r})); print(len(rows), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=project_root)
    assert out.stdout.split() == ["1", "False"], out.stderr
