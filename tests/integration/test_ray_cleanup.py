"""A local Ray ends with the scan that started it, even a SIGKILLed one (issue 28 item 6): Ray's
dashboard and runtime-env agents outlived a killed driver by about two minutes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nc_engine.compute.ray_reaper import PROC, _stat
from tests.conftest import require_module

ROOT = Path(__file__).resolve().parents[2]
DRIVER = """
import json, os, signal, sys
import ray
from nc_engine.compute.ray_backend import init_ray
from nc_engine.compute.ray_reaper import ray_descendants
from nc_engine.config.settings import ComputeConfig

init_ray(ComputeConfig(backend="ray"))

@ray.remote
class Worker:
    def pid(self):
        return os.getpid()

ray.get(Worker.remote().pid.remote())
print(json.dumps(ray_descendants(os.getpid())), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def alive(processes: dict[int, int]) -> list[int]:
    return [pid for pid, start in processes.items() if (info := _stat(pid)) is not None and info[1] == start]


@pytest.mark.skipif(not PROC.is_dir(), reason="the watcher reads /proc (Linux)")
def test_a_killed_drivers_local_ray_does_not_outlive_it():
    require_module("ray")
    result = subprocess.run([sys.executable, "-c", DRIVER], capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert result.returncode == -9, result.stderr[-2000:]
    processes = {int(pid): start for pid, start in json.loads(result.stdout.splitlines()[-1]).items()}
    assert len(processes) >= 4, processes  # gcs, raylet, the agents, the worker
    deadline = time.monotonic() + 30
    while alive(processes) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert alive(processes) == [], [(PROC / str(p) / "cmdline").read_bytes()[:80] for p in alive(processes)]
