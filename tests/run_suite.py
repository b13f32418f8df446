"""`make test`: the suite as two pytest processes side by side, so that it lasts as long as its longer half.

The production-topology tests (tests/test_production_topology*.py: end to end, access, faults) share one stack of
real servers and spend most of their 16-18 minutes waiting on it: heartbeat timeouts, retry delays and the outages the
fault test imposes. The rest of the suite (about 9 minutes alone, 12 beside them) runs beside them, not after them.
The halves share no state: each pytest process has its own PREFECT_HOME, temporary directories and servers on free
ports, and only the production half starts PostgreSQL.

The rest prints to the terminal as it runs. The production half writes to a log (its path is printed first: `tail -f`
it), which is then printed here and followed until that half ends. The exit status is non-zero when either half
failed. Arguments go to both halves (`python tests/run_suite.py -x`); plain `pytest` still runs the whole suite in one
process.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRODUCTION = "tests/test_production_topology*.py"


def follow(log: Path, process: subprocess.Popen) -> None:
    """Print the log from its start, then what is appended to it, until the process has ended."""
    with log.open("rb") as lines:
        while True:
            ended = process.poll() is not None  # read once more after the end: nothing written is lost
            if chunk := lines.read():
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            elif ended:
                return
            else:
                time.sleep(1)


def main(args: list[str]) -> int:
    pytest = str(Path(sys.executable).with_name("pytest"))  # the venv's, as `make test` ran it before
    production = sorted(str(path) for path in Path().glob(PRODUCTION))
    log = Path(tempfile.mkstemp(prefix="shapca-production-tests-", suffix=".log")[1])
    files = " ".join(production)
    print(f"production-topology tests ({files}) run beside the rest; their log: {log}", flush=True)
    with log.open("wb") as out:
        production_half = subprocess.Popen([pytest, *args, *production], stdout=out, stderr=subprocess.STDOUT)
    try:
        rest = subprocess.run([pytest, *args, f"--ignore-glob={PRODUCTION}"]).returncode
        state = "still running" if production_half.poll() is None else "ended"
        print(f"\n===== production-topology tests ({state}): {log} =====", flush=True)
        follow(log, production_half)
    except KeyboardInterrupt:  # Ctrl-C reached both halves too: let them stop their servers
        production_half.wait()
        raise
    log.unlink()
    print(f"\nrest of the suite: exit {rest}; production-topology tests: exit {production_half.returncode}")
    return rest or production_half.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
