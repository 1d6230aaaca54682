"""The real nc-tui binary in a real terminal (tmux): set-up -> scan -> results, by keys, as a person would."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import in_ci

SESSION = f"nctui-test-{os.getpid()}"
ROOT = Path(__file__).resolve().parents[2]
# this checkout's nc-tui (the venv's console script may import another checkout)
NC_TUI = f"PYTHONPATH={ROOT} {sys.executable} -m nc_tui.cli"


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def wait_for_screen(text: str, timeout: float, joined: bool = False) -> str:
    """joined: lines the terminal wrapped are joined (a long run folder path at 80 columns)."""
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", *(["-J"] if joined else []), "-t", SESSION)
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
        if in_ci():
            pytest.fail("tmux is not installed (.ci/run installs it)")
        pytest.skip("tmux is not installed")
    yield
    subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)


def test_setup_scan_results_in_tmux(tmux_session, demo_backdoored, tmp_path):
    command = (
        f"cd {tmp_path} && {NC_TUI} scan {demo_backdoored.config} --out {tmp_path / 'runs'}; "
        f"echo EXITED-$? > {tmp_path / 'exit.txt'}"
    )
    tmux("new-session", "-d", "-s", SESSION, "-x", "120", "-y", "40", command)
    setup = wait_for_screen("Start scan", 60)
    assert "Model file" in setup and "demo_model.pt" in setup
    tmux("send-keys", "-t", SESSION, "F5")
    wait_for_screen("Cancel scan", 60)  # the scan screen's footer
    results = wait_for_screen("BACKDOORED: label", 240)
    assert f"BACKDOORED: label {demo_backdoored.target} is a likely backdoor target" in results
    assert "FLAGGED" in results and "mask" in results
    tmux("send-keys", "-t", SESSION, "q")
    deadline = time.monotonic() + 30
    while not (tmp_path / "exit.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert (tmp_path / "exit.txt").read_text().strip() == "EXITED-0"
    assert any((tmp_path / "runs").iterdir())


def test_no_color_demo_at_80x24_in_tmux(tmux_session, demo_backdoored, tmp_path):
    """NO_COLOR crashed as soon as a mask was drawn and left the terminal frozen; 80x24 is the promised size."""
    command = (
        f"cd {tmp_path} && NO_COLOR=1 {NC_TUI} demo --dir {demo_backdoored.folder} > /dev/tty; "
        f"echo EXITED-$? > {tmp_path / 'exit.txt'}; sleep 30"
    )
    tmux("new-session", "-d", "-s", SESSION, "-x", "80", "-y", "24", command)
    wait_for_screen("BACKDOORED: label", 240)
    wait_for_screen("status", 20)  # the verdict line can be drawn a frame before the table
    results = wait_for_screen("flagged then smallest first", 20)  # and the bars after the table
    assert "▀" not in results
    # the first screen of results holds the verdict, the flagged label's bar and its trigger picture
    target = demo_backdoored.target
    assert re.search(rf"^ +{target} \S+ █+ +\|", results, re.M), results
    assert re.search(r"L1 \d+\.\d\d FLAGGED", results), results  # the title was cut to "L1 9."
    assert any(set(line[60:]) & set("░▒▓█") for line in results.splitlines()[6:18]), results
    styled = tmux("capture-pane", "-p", "-e", "-t", SESSION)
    colours = re.findall(r"\x1b\[[0-9;]*(?:38|48);[25];[0-9;]*m", styled)
    assert colours == [], colours[:3]  # NO_COLOR: no colour, not even greys (issue 25 item 2)
    reversed_text = re.findall(r"\x1b\[(?:[0-9]+;)*7(?:;[0-9]+)*m([^\x1b]*)", styled)
    assert any("BACKDOORED: label" in t for t in reversed_text), reversed_text  # the verdict stands out
    tmux("send-keys", "-t", SESSION, "m")
    assert "input filter" in wait_for_screen("Mitigate the flagged", 20)
    tmux("send-keys", "-t", SESSION, "Escape")
    wait_gone("Mitigate the flagged", 20)
    tmux("send-keys", "-t", SESSION, "F1")
    wait_for_screen("nc-tui keys", 20)
    tmux("send-keys", "-t", SESSION, "Escape")
    wait_gone("nc-tui keys", 20)
    tmux("send-keys", "-t", SESSION, "q")
    printed, run_dir = exited_and_printed(tmp_path, "results again:", 30)
    assert run_dir.parent == Path(demo_backdoored.folder) / "runs" and (run_dir / "report.json").is_file()
    assert f"results again: nc-tui report {run_dir}" in printed and "--resume" not in printed


def exited_and_printed(tmp_path: Path, last_line: str, timeout: float) -> tuple[str, Path]:
    """Once the app has exited (status 0) and left the terminal: what it printed there, and the run folder
    named in its one "run folder:" line."""
    deadline = time.monotonic() + timeout
    while not (tmp_path / "exit.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.3)
    assert (tmp_path / "exit.txt").read_text().strip() == "EXITED-0"
    printed = wait_for_screen(last_line, 10, joined=True)
    lines = [line.strip() for line in printed.splitlines() if line.strip().startswith("run folder: ")]
    assert len(lines) == 1, printed
    return printed, Path(lines[0].removeprefix("run folder: "))


def test_quit_mid_scan_prints_the_resume_line_in_tmux(tmux_session, demo_backdoored, tmp_path):
    """Quitting during a scan (q, then y) keeps the partial run and says, on the terminal, how to resume it."""
    demo = Path(demo_backdoored.folder)
    slow = (
        (demo / "demo.toml")
        .read_text()
        .replace('"demo_model.pt"', f'"{demo / "demo_model.pt"}"')
        .replace('"demo_data.npz"', f'"{demo / "demo_data.npz"}"')
        .replace("[scan]\n", "[scan]\nsamples = 1000\nmax_steps = 1000\nconverge_window = 0\n")
    )  # surely still running
    (tmp_path / "slow.toml").write_text(slow)
    command = (
        f"cd {tmp_path} && NO_COLOR=1 {NC_TUI} scan slow.toml --out {tmp_path / 'runs'}; "
        f"echo EXITED-$? > {tmp_path / 'exit.txt'}; sleep 30"
    )
    tmux("new-session", "-d", "-s", SESSION, "-x", "80", "-y", "24", command)
    wait_for_screen("Start scan", 60)
    tmux("send-keys", "-t", SESSION, "F5")
    wait_for_screen("running t0", 120)
    tmux("send-keys", "-t", SESSION, "q")
    wait_for_screen("Stop it and quit?", 20)
    tmux("send-keys", "-t", SESSION, "y")
    printed, run_dir = exited_and_printed(tmp_path, "resume with:", 60)
    assert run_dir.parent == tmp_path / "runs" and (run_dir / "config.toml").is_file()
    assert f"interrupted; resume with: nc-tui scan --resume {run_dir}" in printed
