"""The pre-commit hooks are `make lint`'s checks, run by the venv's own tools; a commit that breaks them is refused."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / ".pre-commit-config.yaml"
PRE_COMMIT = ROOT / ".venv" / "bin" / "pre-commit"


def _lint_recipe() -> list[str]:
    """`make lint`'s commands, as `ruff check`, `ruff format --check`, `lint-imports`, `mypy`."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("lint:")))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip().removeprefix("$(BIN)/").removesuffix(" ."))
    return recipe


def test_the_hooks_run_what_make_lint_runs():
    (repo,) = yaml.safe_load(CONFIG.read_text())["repos"]
    assert repo["repo"] == "local"  # nothing to download
    hooks = {hook["id"]: hook for hook in repo["hooks"]}
    assert {hook["language"] for hook in hooks.values()} == {"system"}
    tools = [h["entry"] for h in hooks.values() if h["entry"].startswith(".venv/bin/")]
    assert [t.removeprefix(".venv/bin/").replace(" --force-exclude", "") for t in tools] == _lint_recipe()


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return os.environ | {"PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")} | extra


def _verdicts(report: str) -> dict[str, str]:
    """pre-commit's `name.....Passed` lines as {name: verdict}."""
    return {m[1]: m[2] for m in re.finditer(r"^(.+?)\.{3,}(Passed|Failed|Skipped)$", report, re.M)}


def _git(repo: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    identity = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]
    done = subprocess.run(["git", *identity, *args], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    done.stdout += done.stderr  # git commit shows the hooks' report on stderr
    return done


def test_a_commit_that_breaks_lint_or_format_is_refused(tmp_path):
    """README's `.venv/bin/pre-commit install`, in a scratch repository with this project's ruff settings and venv."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(CONFIG, repo)
    shutil.copy(ROOT / "pyproject.toml", repo)
    (repo / ".venv").symlink_to(ROOT / ".venv")
    env = _env(tmp_path, SKIP="lint-imports,mypy")  # the scratch repository holds none of the project's packages
    assert _git(repo, "init", "-q", env=env).returncode == 0
    installed = subprocess.run([".venv/bin/pre-commit", "install"], cwd=repo, env=env, capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    assert _git(repo, "add", ".pre-commit-config.yaml", "pyproject.toml", env=env).returncode == 0

    (repo / "bad.py").write_text("import os\n\nx = 1\n")  # F401: an unused import
    _git(repo, "add", "bad.py", env=env)
    refused = _git(repo, "commit", "-q", "-m", "lint", env=env)
    assert refused.returncode != 0 and _verdicts(refused.stdout)["ruff check"] == "Failed"
    assert "F401" in refused.stdout and "bad.py" in refused.stdout

    (repo / "bad.py").write_text("x  =  1\n")  # lints clean, but not formatted
    _git(repo, "add", "bad.py", env=env)
    refused = _git(repo, "commit", "-q", "-m", "format", env=env)
    assert refused.returncode != 0 and _verdicts(refused.stdout)["ruff format --check"] == "Failed", refused.stdout
    assert "--> bad.py" in refused.stdout and "1 file would be reformatted" in refused.stdout

    (repo / "bad.py").write_text("x = 1\n")
    _git(repo, "add", "bad.py", env=env)
    accepted = _git(repo, "commit", "-q", "-m", "clean", env=env)
    assert accepted.returncode == 0, accepted.stdout
    assert _verdicts(accepted.stdout) == {
        "ruff check": "Passed",
        "ruff format --check": "Passed",
        "lint-imports (the import layers of pyproject.toml)": "Skipped",
        "mypy (components/, flows/, cli/; pyproject.toml [tool.mypy])": "Skipped",
    }
    assert _git(repo, "log", "--format=%s", env=env).stdout.split() == ["clean"]


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="pre-commit runs in a git checkout only")
def test_the_hooks_pass_on_this_checkout(tmp_path):
    done = subprocess.run(
        [str(PRE_COMMIT), "run", "--all-files"], cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-3000:]
    verdicts = _verdicts(done.stdout)
    for name in (
        "ruff check",
        "ruff format --check",
        "lint-imports (the import layers of pyproject.toml)",
        "mypy (components/, flows/, cli/; pyproject.toml [tool.mypy])",
    ):
        assert verdicts[name] == "Passed", done.stdout
