"""One line that says which machine a benchmark or timing ran on, for the records the performance report renders.

Reads /proc on Linux and falls back to `platform` elsewhere. Imports no torch: timing a command must not pay for it.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def _proc_field(path: str, key: str) -> str | None:
    """The value of the first ``key: value`` line of a /proc file, or None where there is none."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_description() -> str:
    """CPU model, cores, memory, OS and Python, e.g.
    ``AMD EPYC 7B13, 2 cores, 8 GiB RAM, Linux x86_64, python 3.11.9``."""
    cpu = _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown CPU"
    mem_total = _proc_field("/proc/meminfo", "MemTotal")  # "16318540 kB"
    memory = ""
    if mem_total and mem_total.split()[0].isdigit():
        memory = f", {int(mem_total.split()[0]) / 2**20:.0f} GiB RAM"
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}, {platform.system()} {platform.machine()}, "
        f"python {platform.python_version()}"
    )


def torch_description() -> str:
    """The torch build and its intra-op threads, e.g. ``torch 2.13.0+cpu, 2 threads`` (imports torch)."""
    import torch

    return f"torch {torch.__version__}, {torch.get_num_threads()} threads"
