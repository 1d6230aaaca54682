"""Process-wide settings that make CPU scans faster. They change the whole process, so the engine never
applies them on its own: `nc-tui`, the Ray workers and the benchmarks call them; an API user may too.

Measured on a 2-core CPU (bench/bench_malloc.py, bench/results/bench_malloc_cpu.txt).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# glibc's mallopt() parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from the heap and are reused
TRIM_THRESHOLD = 2**31 - 1  # never shrink the heap (mallopt takes an int)
USER_MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def passive_openmp() -> None:
    """OpenMP threads that wait by spinning (libgomp's default) burn a core each between torch ops; on a
    machine shared with other work, or beside the app's UI thread, that made the same scan 1.5-5x slower
    (bench/results/bench_app_cpu.txt). Read when torch loads, so set before; a user's value is kept."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def keep_freed_memory() -> bool:
    """Let freed large blocks stay in the process for the next step instead of going back to the kernel.

    A search allocates and frees the same activation buffers (tens of MB) every step. glibc serves blocks
    over its mmap threshold (at most 32 MB, adapting) with fresh mappings and unmaps them on free, so
    every step faulted its pages in again: 3 million page faults and 7 s of system time in a 13 s demo
    scan. Returns whether it applied: glibc on Linux only, never over a user's own MALLOC_* settings, and
    not with NC_KEEP_FREED_MEMORY=0 (the switch bench/bench_malloc.py compares)."""
    if (
        not sys.platform.startswith("linux")
        or any(os.environ.get(k) for k in USER_MALLOC_ENV)
        or os.environ.get("NC_KEEP_FREED_MEMORY") == "0"
    ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: musl's mallopt does nothing
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        )
    except (OSError, AttributeError):
        return False


def tune_process() -> None:
    """Both settings, for a process that is about to scan (before torch is imported)."""
    passive_openmp()
    keep_freed_memory()
