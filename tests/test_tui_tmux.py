"""The real nc-tui binary in a real terminal (tmux): set-up -> scan -> results, by keys, as a person would."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

SESSION = f"nctui-test-{os.getpid()}"


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def wait_for_screen(text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", SESSION)
        if text in screen:
            return screen
        time.sleep(0.5)
    raise AssertionError(f"{text!r} did not appear; the screen shows:\n{screen}")


@pytest.fixture
def tmux_session():
    if shutil.which("tmux") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("tmux is not installed (.ci/run installs it)")
        pytest.skip("tmux is not installed")
    yield
    subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)


def test_setup_scan_results_in_tmux(tmux_session, demo_backdoored, tmp_path):
    binary = Path(sys.executable).with_name("nc-tui")
    command = (f"cd {tmp_path} && {binary} scan {demo_backdoored.config} --out {tmp_path / 'runs'}; "
               f"echo EXITED-$? > {tmp_path / 'exit.txt'}")
    tmux("new-session", "-d", "-s", SESSION, "-x", "120", "-y", "40", command)
    setup = wait_for_screen("Start scan", 60)
    assert "Model file" in setup and "demo_model.pt" in setup
    tmux("send-keys", "-t", SESSION, "F5")
    wait_for_screen("Cancel scan", 60)  # the scan screen's footer
    results = wait_for_screen("Verdict:", 240)
    assert "BACKDOORED" in results and f"label(s) {demo_backdoored.target}" in results
    assert "FLAGGED" in results or "mask" in results
    tmux("send-keys", "-t", SESSION, "q")
    deadline = time.monotonic() + 30
    while not (tmp_path / "exit.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert (tmp_path / "exit.txt").read_text().strip() == "EXITED-0"
    assert any((tmp_path / "runs").iterdir())
