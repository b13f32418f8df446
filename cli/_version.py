"""`shapca --version`: the installed distribution's version, and the git commit when the code runs from a checkout.
Underscored: the command loader skips it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DISTRIBUTION = "shapca-ops"
CODE_ROOT = Path(__file__).resolve().parents[1]  # the directory that holds cli/, components/, flows/


def source_commit(code_root: Path = CODE_ROOT) -> str | None:
    """The short commit of the checkout this code runs from (``-dirty`` when tracked files differ from it); None when
    the code is not the top of a git checkout, e.g. installed into a site-packages that happens to sit inside one."""
    if not (code_root / ".git").exists():  # a directory in a clone, a file in a worktree
        return None
    from components.tracking.lineage import UNKNOWN, git_commit, git_dirty

    commit = git_commit(code_root)
    if commit == UNKNOWN:
        return None
    return commit[:12] + ("-dirty" if git_dirty(code_root) else "")


def version_line() -> str:
    """``shapca-ops 0.1.0 (git 0123456789ab)``; the version from the distribution's metadata, as pip installed it."""
    try:
        installed = version(DISTRIBUTION)
    except PackageNotFoundError:
        installed = "(not installed)"
    commit = source_commit()
    return f"{DISTRIBUTION} {installed}" + (f" (git {commit})" if commit else "")
