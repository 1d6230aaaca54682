"""Process-wide tuning nc-tui applies before a scan: passive OpenMP threads, freed memory kept for reuse."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nc_engine.compute.process_tuning import keep_freed_memory

# Allocates, touches and frees a 64 MB torch tensor 20 times (what a search step does with its activations) and
# prints the minor page faults that took, after calling keep_freed_memory() or not.
PROBE = """
import resource, sys
import torch
from nc_engine.compute.process_tuning import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
torch.ones(16_000_000)  # warm up
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(16_000_000).sum()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(mode: str, **env: str) -> tuple[bool, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "NC_KEEP"))}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], env={**clean, **env}, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_kept_memory_stops_the_page_faults_of_repeated_large_blocks():
    applied, kept = _probe("keep")
    _, default = _probe("default")
    assert applied
    assert default > 20 * 10_000  # every block of 16,000 pages faulted in again
    assert kept < default / 10


def test_a_users_malloc_settings_and_the_switch_are_respected(monkeypatch):
    monkeypatch.setenv("NC_KEEP_FREED_MEMORY", "0")
    assert keep_freed_memory() is False
    monkeypatch.delenv("NC_KEEP_FREED_MEMORY")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert keep_freed_memory() is False
