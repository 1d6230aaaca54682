"""nc_engine: Neural Cleanse backdoor scanning for PyTorch image classifiers (no UI code here)."""

from .config import Config, load_config
from .errors import NCError
from .report import Report
from .scan import run_scan

__all__ = ["Config", "NCError", "Report", "load_config", "run_scan"]
__version__ = "0.1.0"
