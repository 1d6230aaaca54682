"""The engine stands without the UI: importing it pulls in neither textual nor rich."""

import subprocess
import sys

MODULES = [
    "nc_engine",
    "nc_engine.run.scan",
    "nc_engine.demo.build",
    "nc_engine.verdict.report",
    "nc_engine.run.runfolder",
    "nc_engine.mitigate",
]


def test_engine_imports_no_ui_library():
    code = (
        "import sys, importlib\n"
        f"for m in {MODULES!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'rich', 'nc_tui'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"nc_engine imported UI modules: {out}"
