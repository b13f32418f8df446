"""Configure a DVC remote on S3-compatible storage (AWS S3, MinIO, moto) without writing credentials to git.

`.dvc/config` is committed, so it only ever receives the remote's url, endpointurl and region. dvc-s3 reads the
credentials from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) or from `.dvc/config.local`, which
`dvc init` lists in `.dvc/.gitignore`; `configure_s3_remote` checks that both hold before it returns.

DVC runs as a subprocess (`python -m dvc`), the same entry point a user types, so its config validation applies.
"""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

# The S3 options of a DVC remote that hold secrets: none may appear in the committed .dvc/config.
CREDENTIAL_OPTIONS = ("access_key_id", "secret_access_key", "session_token")


class DvcRemoteError(RuntimeError):
    """A dvc command failed, or the repository's config would leak credentials into git."""


def run_dvc(repo_dir: str | Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `dvc <args>` in `repo_dir`; a non-zero exit raises DvcRemoteError with dvc's own message."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=repo_dir, env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        # dvc ends every failure with a support banner; keep the lines that say what went wrong.
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip() and "dvc.org/support" not in ln]
        message = "\n".join(lines)[-2000:]
        raise DvcRemoteError(f"`dvc {' '.join(args)}` failed in {repo_dir} (exit {proc.returncode}): {message}")
    return proc


def check_config_local_ignored(repo_dir: str | Path) -> None:
    """Raise unless `.dvc/.gitignore` keeps `.dvc/config.local` (where credentials may live) out of git."""
    gitignore = Path(repo_dir) / ".dvc" / ".gitignore"
    patterns = gitignore.read_text().split() if gitignore.is_file() else []
    if not {"/config.local", "config.local"} & set(patterns):
        raise DvcRemoteError(f"{gitignore} must list /config.local so that DVC credentials are never committed")


def check_no_credentials_in_config(repo_dir: str | Path) -> None:
    """Raise if the committed `.dvc/config` holds a credential option for any remote."""
    config_path = Path(repo_dir) / ".dvc" / "config"
    parser = configparser.ConfigParser()
    parser.read(config_path)
    for section in parser.sections():
        leaked = [option for option in CREDENTIAL_OPTIONS if parser.has_option(section, option)]
        if leaked:
            raise DvcRemoteError(
                f"{config_path} [{section}] holds {', '.join(leaked)}: credentials belong in the environment "
                f"(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or in .dvc/config.local, never in the committed config"
            )


def configure_s3_remote(
    repo_dir: str | Path,
    name: str,
    url: str,
    endpoint_url: str | None = None,
    default: bool = False,
    region: str | None = None,
) -> None:
    """Add (or overwrite) the S3 remote `name` -> `url` in `.dvc/config`, with an optional endpoint override."""
    if not url.startswith("s3://"):
        raise ValueError(f"an S3 remote url must start with s3://, got {url!r}")
    repo_dir = Path(repo_dir)
    if not (repo_dir / ".dvc").is_dir():
        raise DvcRemoteError(f"{repo_dir} is not a DVC repository (no .dvc/): run `dvc init` first")
    check_config_local_ignored(repo_dir)

    run_dvc(repo_dir, "remote", "add", "--project", "--force", *(["--default"] if default else []), name, url)
    if endpoint_url:
        run_dvc(repo_dir, "remote", "modify", "--project", name, "endpointurl", endpoint_url)
    if region:
        run_dvc(repo_dir, "remote", "modify", "--project", name, "region", region)
    check_no_credentials_in_config(repo_dir)
