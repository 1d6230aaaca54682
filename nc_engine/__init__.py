"""nc_engine: Neural Cleanse backdoor scanning for PyTorch image classifiers (no UI code here)."""

from nc_engine.config.settings import Config, load_config
from nc_engine.errors import NCError
from nc_engine.verdict.report import Report

__all__ = ["Config", "NCError", "Report", "load_config", "run_scan"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """`run_scan` on first use: it pulls in torch (about 1.5 s), which `nc-tui --help` must not wait for."""
    if name == "run_scan":
        from nc_engine.run.scan import run_scan

        return run_scan
    raise AttributeError(f"module 'nc_engine' has no attribute {name!r}")
