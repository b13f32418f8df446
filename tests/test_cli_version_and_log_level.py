"""`shapca --version` and the one log-level switch (`--log-level`, SHAPCA_LOG_LEVEL), run as a user runs them."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from cli._version import source_commit

ROOT = Path(__file__).resolve().parents[1]
SHAPCA = Path(sys.executable).parent / "shapca"  # the console script `make setup` installed
CLI_DEBUG_LINE = re.compile(r"^\d\d:\d\d:\d\d DEBUG cli: shapca-ops ", re.M)  # the command's own debug line
LIBRARY_INFO_LINE = re.compile(r"^\d\d:\d\d:\d\d INFO components\.contexts\.generate: precomputed:blip2: ", re.M)


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _shapca(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "SHAPCA_LOG_LEVEL"} | (env or {})
    return subprocess.run([str(SHAPCA), *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=300)


def test_version_names_the_installed_distribution_and_the_commit_of_the_code(tmp_path):
    done = _shapca("--version", cwd=tmp_path)  # from elsewhere: the commit is the code's, not the working directory's
    assert done.returncode == 0, done.stderr
    head = _git(ROOT, "rev-parse", "HEAD")[:12]
    dirty = "-dirty" if _git(ROOT, "status", "--porcelain", "--untracked-files=no") else ""
    assert done.stdout.strip() == f"shapca-ops {importlib.metadata.version('shapca-ops')} (git {head}{dirty})"


def test_the_commit_comes_only_from_the_top_of_a_checkout(tmp_path):
    assert source_commit(tmp_path) is None  # not a checkout: the version alone
    repo = tmp_path / "repo"
    (repo / "inner").mkdir(parents=True)
    _git(repo, "init", "-q")
    (repo / "f.txt").write_text("one\n")
    _git(repo, "add", "f.txt")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "one")
    sha = _git(repo, "rev-parse", "HEAD")
    assert source_commit(repo) == sha[:12]
    assert source_commit(repo / "inner") is None  # code inside someone else's checkout (a venv in a clone)
    (repo / "f.txt").write_text("two\n")
    assert source_commit(repo) == sha[:12] + "-dirty"


@pytest.fixture(scope="module")
def context_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("contexts")


# `shapca contexts` imports the published BLIP-2 contexts through a cache: a real command with a library INFO line.
@pytest.mark.parametrize(
    "args, env, debug_shown, info_shown",
    [
        (["--log-level", "debug"], {}, True, True),
        ([], {"SHAPCA_LOG_LEVEL": "DEBUG"}, True, True),
        ([], {}, False, True),  # INFO by default: the library's progress lines
        ([], {"SHAPCA_LOG_LEVEL": "warning"}, False, False),
        (["--log-level", "WARNING"], {"SHAPCA_LOG_LEVEL": "debug"}, False, False),  # the option wins
    ],
    ids=["option-debug", "env-debug", "default", "env-warning", "option-over-env"],
)
def test_log_level_switch(context_cache, args, env, debug_shown, info_shown):
    done = _shapca(
        *args,
        "contexts",
        "--dataset",
        "twitter2017",
        "--generator",
        "blip2",
        "--cache-dir",
        str(context_cache),
        "--no-progress",
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "content hash:" in done.stdout  # the command's report is output, not logging: there at every level
    assert bool(CLI_DEBUG_LINE.search(done.stderr)) is debug_shown, done.stderr
    assert bool(LIBRARY_INFO_LINE.search(done.stderr)) is info_shown, done.stderr
    assert not re.search(r"^\S+ DEBUG (?!cli|components)", done.stderr, re.M)  # other libraries keep their levels


def test_an_unknown_level_is_refused_with_the_allowed_ones():
    result = CliRunner().invoke(app, ["validate", "--help"], env={"SHAPCA_LOG_LEVEL": "verbose", "COLUMNS": "200"})
    assert result.exit_code == 2
    assert "SHAPCA_LOG_LEVEL" in result.output and "'debug', 'info', 'warning', 'error', 'critical'" in result.output
    result = CliRunner().invoke(app, ["--log-level", "loud", "validate", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "--log-level" in result.output


def test_flows_forward_the_library_lines_at_the_environment_level(monkeypatch):
    """In a flow run the library's records go to Prefect's API log handler, at SHAPCA_LOG_LEVEL's level."""
    from prefect.logging.handlers import APILogHandler

    from flows.progress import forward_library_logs

    library = logging.getLogger("components")
    before = library.level
    for name, level in (("debug", logging.DEBUG), ("WARNING", logging.WARNING)):
        monkeypatch.setenv("SHAPCA_LOG_LEVEL", name)
        with forward_library_logs():
            (handler,) = [h for h in library.handlers if isinstance(h, APILogHandler)]
            assert handler.level == level
            assert library.isEnabledFor(logging.DEBUG) is (level == logging.DEBUG)
        assert not [h for h in library.handlers if isinstance(h, APILogHandler)] and library.level == before
    monkeypatch.setenv("SHAPCA_LOG_LEVEL", "loud")
    with pytest.raises(ValueError, match=r"SHAPCA_LOG_LEVEL='loud' is not a log level; expected one of debug, info"):
        with forward_library_logs():
            pass
