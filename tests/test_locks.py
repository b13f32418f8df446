"""The locks: what `make lock` writes, what `make setup` and the worker image install, and torch's own step.

Offline checks of the committed files and of this venv. Regenerating the locks needs PyPI, so that check is
`make lock-check` (README, Tests), not part of `make test`.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import tomllib

import pytest
from lockfiles import DEV_LOCK, ROOT, RUNTIME_LOCK, read_lock, versions
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
UV_SETTINGS = tomllib.loads((ROOT / "requirements" / "uv.toml").read_text())
CUDA_ONLY = re.compile(r"^(nvidia-|cuda-|triton)")  # what PyPI's Linux (CUDA) torch adds to the CPU build's needs


def _requirements(specs: list[str]) -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, specs)}


RUNTIME_DEPS = _requirements(PYPROJECT["dependencies"])
DEV_TOOLS = _requirements(PYPROJECT["optional-dependencies"]["dev"])
TORCH_PIN = str(RUNTIME_DEPS["torch"].specifier).removeprefix("==")


@pytest.fixture(scope="module")
def runtime():
    return read_lock(RUNTIME_LOCK)


@pytest.fixture(scope="module")
def dev():
    return read_lock(DEV_LOCK)


def test_every_line_is_pinned_and_hashed_and_says_how_it_was_made(runtime, dev):
    for path, pins in ((RUNTIME_LOCK, runtime), (DEV_LOCK, dev)):
        assert "#    make lock" in path.read_text().splitlines()[:3], f"{path}: not written by `make lock`"
        assert len(pins) > 200, path  # read_lock itself fails on any line not pinned with ==
        for pin in pins.values():
            assert pin.hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in pin.hashes), (path, pin)


def test_the_runtime_lock_holds_no_test_or_lint_tool(runtime, dev):
    runtime_names = {name for name, _ in runtime}
    assert {"pytest", "moto", "import-linter", "ruff"} <= set(DEV_TOOLS)
    assert not set(DEV_TOOLS) & runtime_names, sorted(set(DEV_TOOLS) & runtime_names)
    # The tools' own dependencies stay out too (import-linter's graph builder, pytest's config reader, moto's mocks).
    assert not {"grimp", "iniconfig", "responses"} & runtime_names
    assert set(DEV_TOOLS) <= {name for name, _ in dev}


def test_the_dev_lock_is_the_runtime_lock_plus_the_tools(runtime, dev):
    """The same pins, markers and hashes for everything both install: `make setup` tests what the image runs."""
    for key, pin in runtime.items():
        assert dev.get(key) == pin, f"{pin.name}: runtime {pin} but dev {dev.get(key)}"


def test_the_locks_satisfy_pyproject(runtime, dev):
    """pyproject.toml changed without `make lock` shows here, offline (make lock-check also catches new pins)."""
    runtime_versions = {name: pin.version for (name, _), pin in runtime.items()}
    dev_versions = {name: pin.version for (name, _), pin in dev.items()}
    for name, req in RUNTIME_DEPS.items():
        if name == "torch":
            continue
        assert name in runtime_versions, f"{name} (pyproject dependencies) is missing from {RUNTIME_LOCK.name}"
        assert req.specifier.contains(runtime_versions[name], prereleases=True), (req, runtime_versions[name])
    for name, req in DEV_TOOLS.items():
        assert req.specifier.contains(dev_versions[name], prereleases=True), (req, dev_versions[name])


def test_torch_is_left_to_its_own_step_and_its_cpu_requirements_are_locked(runtime, dev):
    """The locks leave torch out (its build, CPU or CUDA, and so its wheel and hashes, are the installer's) but hold
    what the CPU build requires, as requirements/uv.toml declares it; nothing of the CUDA build is locked."""
    assert UV_SETTINGS["pip"]["no-emit-package"] == ["torch"]
    for pins in (runtime, dev):
        names = {name for name, _ in pins}
        assert "torch" not in names
        assert not [n for n in names if CUDA_ONLY.match(n)]
    (declared,) = [m for m in UV_SETTINGS["dependency-metadata"] if m["name"] == "torch"]
    assert declared["version"] == TORCH_PIN
    declared_requires = _requirements(declared["requires-dist"])
    assert set(declared_requires) <= {name for name, _ in runtime}

    # The declaration is the installed torch's own metadata (here the CPU wheel; a CUDA build adds CUDA-only lines).
    assert importlib.metadata.version("torch").split("+")[0] == TORCH_PIN
    installed = [Requirement(r) for r in importlib.metadata.requires("torch")]
    installed = [r for r in installed if "extra" not in str(r.marker) and not CUDA_ONLY.match(r.name)]
    assert {n: str(r) for n, r in declared_requires.items()} == {canonicalize_name(r.name): str(r) for r in installed}


def test_this_venv_is_what_the_dev_lock_pins():
    """`make setup` installed every pin of the dev lock (that applies here) at its version, and torch at pyproject's."""
    wrong = {}
    for name, pinned in versions(DEV_LOCK).items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != pinned:
            wrong[name] = (pinned, installed)
    assert not wrong, f"pinned vs installed: {wrong}; run make setup"


def _make(*args: str) -> str:
    done = subprocess.run(["make", "-s", *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_setup_installs_the_dev_lock_hash_checked_then_torch_by_version():
    assert _make("--eval", "print-torch: ; @echo $(TORCH_VERSION)", "print-torch").strip() == TORCH_PIN
    # The recipe as make would run it (-n), with pyproject.toml taken as changed (-W), by default and with the
    # README's opt-in CPU index.
    default = _make("-n", "-W", "pyproject.toml", ".venv/.installed").splitlines()
    assert default[0] == ".venv/bin/pip install -q --require-hashes --no-deps -r requirements/dev.txt"
    assert default[1].strip() == '.venv/bin/pip install -q "torch==2.13.0"'  # pip's index: PyPI unless configured
    assert default[2:4] == [".venv/bin/pip install -q --no-deps --no-build-isolation -e .", ".venv/bin/pip check"]
    cpu_index = "https://download.pytorch.org/whl/cpu"
    cpu = _make("-n", "-W", "pyproject.toml", ".venv/.installed", f"TORCH_INDEX={cpu_index}").splitlines()
    assert cpu[1] == f'.venv/bin/pip install -q "torch==2.13.0" --index-url {cpu_index}'
    assert cpu[0] == default[0] and cpu[2:] == default[2:]  # only torch's step changes


def test_make_lock_needs_uv_alone_hash_checked_not_a_setup(tmp_path, dev):
    """`make lock` must run while pyproject.toml is ahead of the locks (when a setup's pip check would fail): on a
    venv without uv it installs uv alone, with the dev lock's hashes, then compiles."""
    venv = tmp_path / "venv"
    venv.mkdir()
    plan = _make("-n", f"VENV={venv}", "lock").splitlines()
    assert not any("-r requirements/dev.txt" in line for line in plan)  # no setup
    extract, install = plan[-4:-2]
    assert install == f"{venv}/bin/pip install -q --require-hashes --no-deps -r {venv}/uv-requirement.txt"
    assert plan[-2].endswith(
        "uv pip compile --config-file requirements/uv.toml -q pyproject.toml  -o requirements/runtime.txt"
    )
    subprocess.run(extract, shell=True, cwd=ROOT, check=True)
    (uv,) = read_lock(venv / "uv-requirement.txt").values()
    assert uv == dev["uv", ""]
