"""The command line over real scans of the demo model: a headless scan and its report, and the commands
that must not import torch (checked in a subprocess after a scan).
"""

import subprocess
import sys

from nc_tui.cli import main


def test_headless_scan_then_report(demo_backdoored, tmp_path, capsys):
    code = main(
        [
            "scan",
            demo_backdoored.config,
            "--headless",
            "--out",
            str(tmp_path / "runs"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "Verdict: BACKDOORED" in out and "FLAGGED" in out
    run = next((tmp_path / "runs").iterdir())
    assert main(["report", str(run)]) == 0
    again = capsys.readouterr().out
    assert "Verdict: BACKDOORED" in again and f"{demo_backdoored.target}" in again


def _modules_after(code: str) -> str:
    import os
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env).stdout


def test_help_report_print_and_config_errors_do_not_import_torch(tmp_path, demo_backdoored):
    """`nc-tui --help` took 1.6 s importing torch; the commands that only read files must not."""
    from nc_engine.demo.build import make_demo
    from nc_engine.run.scan import run_scan

    run = run_scan(load_config_for(demo_backdoored, tmp_path)).run_dir
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\npath = 3\n")
    for argv in (["--help"], ["report", run, "--print"], ["scan", str(bad), "--headless"]):
        out = _modules_after(
            f"import sys\nfrom nc_tui.cli import main\ntry:\n    main({argv!r})\n"
            "except SystemExit:\n    pass\nprint('TORCH', 'torch' in sys.modules)\n"
        )
        assert "TORCH False" in out, (argv, out[-500:])
    assert make_demo(demo_backdoored.folder).cached  # and a cached demo says so instead of a training time


def load_config_for(info, tmp_path):
    from nc_engine.config.settings import load_config

    cfg = load_config(info.config)
    cfg.output.dir = str(tmp_path / "runs")
    cfg.scan.samples, cfg.scan.max_steps = 32, 20
    return cfg
