"""The nc-tui command without a scan: one-line errors with no traceback, the console script, threads."""

import subprocess
import sys

from nc_tui.cli import main


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


def test_version_prints_the_installed_version_without_loading_torch():
    from importlib.metadata import version

    code = (
        "import sys; from nc_tui.cli import main\n"
        "try:\n    main(['--version'])\n"
        "except SystemExit as e:\n    print('torch' in sys.modules, e.code)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"nc-tui {version('nc-tui')}" in out.stdout and out.stdout.strip().endswith("False 0")
