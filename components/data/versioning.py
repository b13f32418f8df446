"""Is `data/` the version that `data.dvc` points at? `dvc status` answers; `dvc pull` makes it so when it is not.

The pointer file (`data.dvc`, committed to git) records the md5 of the whole directory (`<md5>.dir`); that md5 is
the data version every downstream step (validation cache, MLflow params) refers to. Missing or partial data is pulled
from the DVC remote; local edits are never overwritten silently: they are an error unless `force=True`.

A directory DVC does not track (a copy elsewhere, a test fixture) gets its version from its content instead:
`content_version` is sha256 over every file's relative path and bytes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.common.dvc_pointer import read_dvc_pointer
from components.common.hashing import sha256_named_files

log = logging.getLogger(__name__)

DVC_REMOTE_ENV = "SHAPCA_DVC_REMOTE"  # which DVC remote a pull reads; unset: core.remote of .dvc/config
LOCK_WAIT_S = 300.0  # how long a check waits for another DVC process's repository lock (a large pull takes minutes)
LOCK_POLL_S = 2.0


class DataVersionError(RuntimeError):
    """`data/` does not match its pointer and could not be made to."""


@dataclass(frozen=True)
class DataVersion:
    md5: str  # the directory hash recorded in the pointer, without the ".dir" suffix
    path: Path  # the materialised directory
    pulled: bool  # True when it had to be pulled to match the pointer


def read_pointer(pointer: Path) -> tuple[str, Path]:
    """The (md5 without ".dir", output path) of the data output `pointer` records; DataVersionError when it cannot."""
    try:
        output = read_dvc_pointer(pointer)
    except (FileNotFoundError, ValueError) as err:
        raise DataVersionError(str(err)) from err
    return output.dir_md5, output.path


def _describe(status: dict[str, Any]) -> str:
    # dvc status: {"data.dvc": [{"changed outs": {"data": "modified"}}]} -> "data: modified"
    parts: list[str] = []
    for entries in status.values():
        for entry in entries:
            if isinstance(entry, dict):
                for changes in entry.values():
                    parts.extend(f"{out}: {what}" for out, what in changes.items())
            else:
                parts.append(str(entry))
    return ", ".join(parts) or str(status)


def ensure_data_matches_pointer(
    project_root: str | Path,
    pointer: str = "data.dvc",
    *,
    pull: bool = True,
    force: bool = False,
    lock_wait_s: float = LOCK_WAIT_S,
) -> DataVersion:
    """Check `data/` against `pointer` with `dvc status`; pull when it differs, from the remote named by
    $SHAPCA_DVC_REMOTE (workers set `storage`, the S3 remote in .dvc/config) or else DVC's default remote.

    `force=True` lets the pull overwrite local edits (what `dvc pull --force` does); without it they are an error.
    While another DVC process holds the repository's lock (a `dvc push` or `dvc pull` in a terminal, a second run on
    this checkout), the check waits for it, up to `lock_wait_s` seconds; DVC itself gives up after 3.
    """
    from dvc.lock import LockError

    root = Path(project_root).resolve()
    md5, out_path = read_pointer(root / pointer)
    deadline = time.monotonic() + lock_wait_s
    while True:
        try:
            pulled = _check_and_pull(root, pointer, out_path, pull=pull, force=force)
            return DataVersion(md5=md5, path=out_path, pulled=pulled)
        except LockError as err:
            if time.monotonic() >= deadline:
                raise DataVersionError(
                    f"{root}: another DVC process held the repository's lock (.dvc/tmp/lock) for over "
                    f"{lock_wait_s:.0f} s, so {pointer} could not be checked: {err}"
                ) from err
            log.info("%s: another DVC process holds the repository's lock; checking again in %.0f s", root, LOCK_POLL_S)
            time.sleep(LOCK_POLL_S)


def _check_and_pull(root: Path, pointer: str, out_path: Path, *, pull: bool, force: bool) -> bool:
    """One `dvc status` (and `dvc pull` when it differs) under the repository's lock; True when it pulled."""
    from dvc.exceptions import DvcException
    from dvc.lock import LockError
    from dvc.repo import Repo

    # DVC resolves output paths against the process's working directory, so it must be the project root.
    with contextlib.chdir(root), Repo(str(root)) as repo:
        status = repo.status(targets=[pointer])
        if not status:
            return False
        if not pull:
            raise DataVersionError(f"{out_path} does not match {pointer} ({_describe(status)}); run `dvc pull`")
        remote = os.environ.get(DVC_REMOTE_ENV) or None
        log.info(
            "%s does not match %s (%s): pulling from DVC remote %s",
            out_path,
            pointer,
            _describe(status),
            remote or "(default)",
        )
        try:
            repo.pull(targets=[pointer], remote=remote, force=force)
        except LockError:
            raise  # not a failed pull: the caller waits for the lock and checks again
        except DvcException as err:
            raise DataVersionError(
                f"{out_path} does not match {pointer} ({_describe(status)}) and `dvc pull` failed: {err}\n"
                "Local edits are kept unless you discard them (`dvc pull --force`) or record them as a new data "
                "version (`dvc add data`, then commit data.dvc)."
            ) from err
        after = repo.status(targets=[pointer])
    if after:
        raise DataVersionError(f"{out_path} still differs from {pointer} after `dvc pull`: {_describe(after)}")
    return True


def fingerprint_directory(path: str | Path) -> str:
    """sha256 over (relative path, bytes) of every file under `path`, in sorted order: changes with any edit."""
    root = Path(path)
    if not root.is_dir():
        raise DataVersionError(f"{root}: not a directory")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return sha256_named_files([(f.relative_to(root).as_posix(), f) for f in files])


def content_version(data_dir: str | Path, tracked: DataVersion | None) -> str:
    """The version of `data_dir`: the pointer's md5 when it is the directory DVC tracks (and `tracked` says it
    matches), else `sha256:<fingerprint>` of its files."""
    if tracked is not None and Path(data_dir).resolve() == tracked.path.resolve():
        return f"md5:{tracked.md5}"
    return f"sha256:{fingerprint_directory(data_dir)}"
