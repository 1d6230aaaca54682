"""Shared fixtures: demo models trained once per session, and the shared real data."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from nc_engine.compute.process_tuning import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]

warnings.filterwarnings("ignore", category=FutureWarning, module="torch")

keep_freed_memory()  # the tests scan in this process, as nc-tui does in its own


def in_ci() -> bool:
    """CI installs every extra, tmux and the shared data: there a missing one is a failure, never a skip."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_shared(path: Path) -> Path:
    """Real-data tests fail in CI when ../shared/data is missing, and skip only outside CI."""
    if path.exists():
        return path
    message = f"{path} is missing (the shared real data beside the project)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def require_module(name: str):
    """An optional extra's module: in CI (which installs every extra) its absence fails; elsewhere it skips
    (also at a test module's top level)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        if in_ci():
            pytest.fail(f'{name} is not installed (pip install -e ".[dev]")')
        pytest.skip(f"{name} is not installed", allow_module_level=True)


@pytest.fixture(scope="session")
def demo_backdoored(tmp_path_factory):
    from nc_engine.demo.build import make_demo

    return make_demo(tmp_path_factory.mktemp("demo_bd"), backdoor=True, seed=0)


@pytest.fixture(scope="session")
def demo_clean(tmp_path_factory):
    from nc_engine.demo.build import make_demo

    return make_demo(tmp_path_factory.mktemp("demo_clean"), backdoor=False, seed=0)


def cfg_for(tmp_path, data, shape=(1, 8, 8), classes=3):
    """A config for data tests: a (never loaded) model of `shape` and `classes`, and the given [data]."""
    from nc_engine.config.settings import config_from_dict

    return config_from_dict(
        {
            "model": {"format": "torchscript", "path": "m.pt", "num_classes": classes, "input_shape": list(shape)},
            "data": data,
        },
        source=str(tmp_path / "c.toml"),
        base_dir=tmp_path,
    )


def noop(message):
    """A warn callback for loads that must not warn."""
    raise AssertionError(message)


@pytest.fixture(scope="session", autouse=True)
def margin_detector_only_where_tested():
    """Scans run in this process skip the max-margin detector (on by default; seconds to tens of seconds per
    real model on a 2-core CPU, which the suite's budget cannot pay for every scan); its own module
    (tests/integration/test_max_margin.py) puts the real one back, and scans started as a command in a
    child process (the tmux and CLI-subprocess tests) run it as a user's do."""
    import nc_engine.run.scan as scan

    real = scan.run_detectors
    scan.run_detectors = lambda *args, **kwargs: {}
    yield real
    scan.run_detectors = real
