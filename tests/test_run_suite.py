"""tests/run_suite.py, what `make test` runs: on a scratch suite, the two halves run at the same time, every test runs
in exactly one of them, the production half's output reaches the terminal, and a failure in either half fails it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RUNNER = Path(__file__).with_name("run_suite.py")

# Each scratch test marks that it started, waits until the other half's test has started (both halves at once), then
# passes or fails as its half is told to.
SCRATCH_TEST = """
import os, time
from pathlib import Path

def test_{name}():
    marks = Path(os.environ["SCRATCH_MARKS"])
    (marks / "{name}").write_text("started")
    deadline = time.monotonic() + 60
    while not (marks / "{other}").exists():
        assert time.monotonic() < deadline, "{other} never started while {name} ran: the halves ran one after another"
        time.sleep(0.1)
    print("{name} output")
    assert os.environ["SCRATCH_FAIL"] != "{name}"
"""


def run_scratch_suite(tmp_path: Path, fail: str) -> subprocess.CompletedProcess:
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "test_production_topology_scratch.py").write_text(SCRATCH_TEST.format(name="production", other="rest"))
    (tests / "test_rest.py").write_text(SCRATCH_TEST.format(name="rest", other="production"))
    (tmp_path / "marks").mkdir()
    env = {"PATH": "/usr/bin:/bin", "SCRATCH_MARKS": str(tmp_path / "marks"), "SCRATCH_FAIL": fail}
    return subprocess.run(
        [sys.executable, str(RUNNER), "-q", "-rA", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("fail", ["nothing", "production", "rest"])
def test_the_halves_run_side_by_side_and_either_fails_the_suite(tmp_path, fail):
    done = run_scratch_suite(tmp_path, fail)
    out = done.stdout
    assert (done.returncode == 0) == (fail == "nothing"), out + done.stderr
    # Each test ran once, in its own half, and the production half's report (a log) was printed in full.
    assert out.count("test_production_topology_scratch.py::test_production") == 1, out
    assert out.count("test_rest.py::test_rest") == 1, out
    assert "production output" in out and "rest output" in out, out
    assert out.index("rest output") < out.index("===== production-topology tests"), out
    (log,) = {line.rsplit(" ", 1)[-1] for line in out.splitlines() if line.startswith("production-topology tests (")}
    assert not Path(log).exists(), "the production half's log was not removed"
