"""The real nc-tui binary in a real terminal (tmux): set-up -> scan -> results, by keys, as a person would."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

SESSION = f"nctui-test-{os.getpid()}"
ROOT = Path(__file__).resolve().parents[2]
# this checkout's nc-tui (the venv's console script may import another checkout)
NC_TUI = f"PYTHONPATH={ROOT} {sys.executable} -m nc_tui.cli"


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


def wait_gone(text: str, timeout: float) -> None:
    """Keys sent back to back can merge (Escape + F1 reads as alt+F1): wait for each to take effect."""
    deadline = time.monotonic() + timeout
    while text in tmux("capture-pane", "-p", "-t", SESSION):
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} is still on the screen")
        time.sleep(0.3)


@pytest.fixture
def tmux_session():
    if shutil.which("tmux") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("tmux is not installed (.ci/run installs it)")
        pytest.skip("tmux is not installed")
    yield
    subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)


def test_setup_scan_results_in_tmux(tmux_session, demo_backdoored, tmp_path):
    command = (f"cd {tmp_path} && {NC_TUI} scan {demo_backdoored.config} --out {tmp_path / 'runs'}; "
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


def test_no_color_demo_at_80x24_in_tmux(tmux_session, demo_backdoored, tmp_path):
    """NO_COLOR crashed as soon as a mask was drawn and left the terminal frozen; 80x24 is the promised size."""
    command = (f"cd {tmp_path} && NO_COLOR=1 {NC_TUI} demo --dir {demo_backdoored.folder} > /dev/tty; "
               f"echo EXITED-$? > {tmp_path / 'exit.txt'}; sleep 30")
    tmux("new-session", "-d", "-s", SESSION, "-x", "80", "-y", "24", command)
    results = wait_for_screen("Verdict:", 240)
    assert "status" in results and "▀" not in results
    tmux("send-keys", "-t", SESSION, "m")
    assert "input filter" in wait_for_screen("Mitigate the flagged", 20)
    tmux("send-keys", "-t", SESSION, "Escape")
    wait_gone("Mitigate the flagged", 20)
    tmux("send-keys", "-t", SESSION, "F1")
    wait_for_screen("nc-tui keys", 20)
    tmux("send-keys", "-t", SESSION, "Escape")
    wait_gone("nc-tui keys", 20)
    tmux("send-keys", "-t", SESSION, "q")
    deadline = time.monotonic() + 30
    while not (tmp_path / "exit.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert (tmp_path / "exit.txt").read_text().strip() == "EXITED-0"
    assert "run folder:" in wait_for_screen("run folder:", 10)  # printed on exit, where the results are
