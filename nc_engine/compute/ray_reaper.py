"""Ends a local Ray's processes when the scan that started it ends, however it ends. Ray's dashboard and
runtime-env agents outlived a SIGKILLed driver by about two minutes; a killed process runs no clean-up,
so a small watcher process does it: it holds the read end of a pipe whose write end only the driver
holds, notes the driver's Ray processes every two seconds, and when the pipe closes (the driver ended
or shut Ray down) it ends those still running. Linux only (it reads /proc); elsewhere it does nothing.

Run as a file, not as a module: importing the package would load torch into the watcher."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

PROC = Path("/proc")
_watcher: subprocess.Popen | None = None


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a process, or None when it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": comm may hold spaces
    return int(fields[1]), int(fields[19])


def _is_ray(pid: int) -> bool:
    try:
        cmdline = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return False
    return b"ray" in cmdline


def ray_descendants(root: int) -> dict[int, int]:
    """The Ray processes below `root`: pid -> start time (so that a reused pid is never ended)."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (info := _stat(int(entry.name))) is not None:
            parents.setdefault(info[0], []).append(int(entry.name))
            starts[int(entry.name)] = info[1]
    found, todo = {}, list(parents.get(root, []))
    while todo:
        pid = todo.pop()
        todo.extend(parents.get(pid, []))
        if pid != os.getpid() and _is_ray(pid):
            found[pid] = starts[pid]
    return found


def _end(processes: dict[int, int]) -> None:
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 0.0)):
        alive = [pid for pid, start in processes.items() if (info := _stat(pid)) is not None and info[1] == start]
        for pid in alive:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [pid for pid in alive if _stat(pid) is not None]


def watch(driver: int) -> None:
    """Note the driver's Ray processes until stdin closes, then end those still running."""
    seen: dict[int, int] = {}
    while True:
        seen.update(ray_descendants(driver))
        ready, _, _ = select.select([sys.stdin.fileno()], [], [], 2.0)
        if ready and not os.read(sys.stdin.fileno(), 1024):
            break
    _end(seen)


def start_watcher() -> None:
    """Start the watcher for the local Ray this process just started (once; Linux only)."""
    global _watcher
    if _watcher is not None or not PROC.is_dir():
        return
    _watcher = subprocess.Popen(
        [sys.executable, "-S", str(Path(__file__).resolve()), str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl+C to the terminal's group reaches the scan, not its clean-up
    )


def stop_watcher() -> None:
    """Ray was shut down: the watcher ends what is left of it, now, and exits."""
    global _watcher
    if _watcher is not None and _watcher.stdin is not None:
        _watcher.stdin.close()
        _watcher.wait(timeout=30)
    _watcher = None


if __name__ == "__main__":
    watch(int(sys.argv[1]))
