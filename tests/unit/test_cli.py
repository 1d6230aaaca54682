"""The nc-tui command: headless scan, report, and one-line errors with no traceback."""

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


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["scan", str(tmp_path / "missing.toml"), "--headless"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.toml: config file not found" in err
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[model]\nformat = "torchscript"\npath = "nope.pt"\nnum_classes = 10\n'
        'input_shape = [1, 28, 28]\n[data]\npath = "x.npz"\n[output]\ndir = "out"\n'
    )
    assert main(["scan", str(bad), "--headless"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.pt: TorchScript model file not found" in err
    assert not (tmp_path / "out").exists()  # nothing written for a failed scan
    assert main(["report", str(tmp_path)]) == 2
    assert "no report.json" in capsys.readouterr().err


def test_console_script_runs_in_a_subprocess(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "nc_tui.cli", "scan", str(tmp_path / "x.toml"), "--headless"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "config file not found" in proc.stderr


def _modules_after(code: str) -> str:
    import os
    import subprocess
    import sys
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


def test_cli_makes_openmp_threads_wait_without_spinning(monkeypatch, tmp_path):
    """Spinning OpenMP threads made scans 1.5-5x slower on a shared 2-core machine; a user's choice is kept."""
    import os

    from nc_tui.cli import main

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
