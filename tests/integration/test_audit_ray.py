"""The audit's parallel mode on a local Ray started on the CPU: every model's scan as one Ray task, the
same summary as a local audit, and a rerun that skips what is finished."""

from __future__ import annotations

import sys

import pytest

from nc_engine.audit import events as ae
from nc_engine.audit.run import run_audit
from nc_engine.errors import ConfigError
from tests.audit_fixtures import cheap_zoo
from tests.conftest import require_module

RAY = '[compute]\nbackend = "ray"\ncpus = 1\n'


def test_without_ray_one_clear_line(tmp_path, monkeypatch):
    spec = cheap_zoo(tmp_path, ["c_dropout"], RAY)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(ConfigError, match=r'backend = "ray" needs Ray: pip install "nc-tui\[ray\]"'):
        run_audit(spec)
    assert not spec.out.exists()  # nothing written


@pytest.fixture
def local_ray():
    """One local Ray on the CPU for the test (the audit uses a Ray it finds running and leaves it running)."""
    require_module("ray")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def test_models_scanned_as_ray_tasks_then_skipped(tmp_path, local_ray):
    spec = cheap_zoo(tmp_path, ["c_dropout", "d_broken", "e_dropout"], RAY)
    events = []
    result = run_audit(spec, events.append)
    assert [(r.model, r.verdict) for r in result.rows] == [
        ("c_dropout", "inconclusive"),
        ("d_broken", "error"),
        ("e_dropout", "inconclusive"),
    ]
    assert result.complete and "not a TorchScript model" in result.rows[1].reasons[0]
    assert {r.run_folder.rsplit("/", 2)[-2] for r in (result.rows[0], result.rows[2])} == {"c_dropout", "e_dropout"}
    assert sorted(e.name for e in events if isinstance(e, ae.ModelFinished)) == ["c_dropout", "d_broken", "e_dropout"]
    again = []
    rerun = run_audit(spec, again.append)
    assert {e.name: e.skipped for e in again if isinstance(e, ae.ModelFinished)} == {
        "c_dropout": True,
        "d_broken": False,
        "e_dropout": True,
    }
    assert local_ray.is_initialized()  # a Ray the audit did not start is left running
    assert [r.verdict for r in rerun.rows] == ["inconclusive", "error", "inconclusive"]
