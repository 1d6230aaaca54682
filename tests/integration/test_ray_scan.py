"""One scan spread over Ray workers, on a local 2-CPU Ray (issue 15): the same per-label result as a
local scan, a worker killed mid-scan and the scan still complete, a stop that leaves a resumable run."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from nc_engine import load_config, run_scan
from nc_engine.demo.build import make_demo
from tests.conftest import require_module

ray = require_module("ray")

from nc_engine.compute.ray_parcel import pack_model, unpack_model  # noqa: E402 - needs Ray

LABELS = [0, 1, 2, 3]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    # each worker takes one of the two CPUs, and Ray gives it one torch thread
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The demo's network and data, trained briefly: a backdoor is not needed to compare results."""
    return make_demo(tmp_path_factory.mktemp("ray_demo"), n_train=2000, epochs=1)


def config(tiny, out: Path, backend: str, **scan):
    cfg = load_config(tiny.config)
    cfg.output.dir = str(out)
    # every search runs exactly 30 steps of one mini-batch
    for key, value in dict(
        labels=LABELS, samples=32, asr_samples=100, max_steps=30, early_stop=False, converge_window=0, **scan
    ).items():
        setattr(cfg.scan, key, value)
    cfg.compute.backend, cfg.compute.workers = backend, 2
    return cfg


@pytest.fixture(scope="module")
def local_report(tiny, tmp_path_factory):
    return run_scan(config(tiny, tmp_path_factory.mktemp("local"), "local"))


def same_results(report, reference):
    got = {r.label: r for r in report.labels}
    assert sorted(got) == LABELS and report.complete
    for ref in reference.labels:
        assert got[ref.label].l1_norm == pytest.approx(ref.l1_norm, rel=1e-4), ref.label
        assert got[ref.label].steps == ref.steps and got[ref.label].converged == ref.converged
        assert got[ref.label].asr == pytest.approx(ref.asr, abs=1e-6)


def test_ray_scan_matches_the_local_scan(tiny, local_report, tmp_path):
    events = []
    report = run_scan(config(tiny, tmp_path, "ray"), on_event=events.append)
    same_results(report, local_report)
    assert report.info.images == local_report.info.images  # every stamped image counted once
    placed = {e.label: e.worker for e in events if e.kind == "job_placed"}
    assert sorted(placed) == LABELS
    assert {w.split()[0] for w in placed.values()} == {"w0", "w1"} and all("cpu" in w for w in placed.values())
    steps = [e for e in events if e.kind == "step"]
    assert len(steps) == 30 * len(LABELS) and all(e.mask is not None and e.mask.shape == (28, 28) for e in steps)
    assert not [e for e in events if e.kind == "warning"]
    # the driver alone wrote the run folder, as a local scan does
    lines = [json.loads(line) for line in (Path(report.run_dir) / "events.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "trial_finished" for e in lines) == len(LABELS)
    assert sum(e["event"] == "job_placed" for e in lines) == len(LABELS)


@pytest.fixture
def quick_polls(monkeypatch):
    """The driver polls every 20 ms, so it sees a worker's first steps long before that worker is done."""
    from nc_engine.compute import ray_backend

    monkeypatch.setattr(ray_backend, "POLL_SECONDS", 0.02)


def test_a_worker_killed_mid_scan_has_its_jobs_run_again(tiny, local_report, tmp_path, quick_polls):
    killed = []

    def kill_w1(event):
        if event.kind == "step" and not killed:
            placed = [e for e in events if e.kind == "job_placed" and e.label == event.label]
            if placed and placed[-1].worker.startswith("w1"):
                name = next(n for n in ray.util.list_named_actors() if n.endswith("-w1"))
                ray.kill(ray.get_actor(name), no_restart=True)
                killed.append(event.label)

    events = []
    # one search at a time per worker: w1 has a second one waiting when it is killed in its first
    report = run_scan(config(tiny, tmp_path, "ray", group_size=1), on_event=lambda e: (events.append(e), kill_w1(e)))
    assert killed, "the test never saw worker w1 running"
    warnings = [e.message for e in events if e.kind == "warning"]
    assert len(warnings) == 1 and "Ray worker w1" in warnings[0] and "died" in warnings[0], warnings
    assert f"label(s) {killed[0]}" in warnings[0] or f", {killed[0]}" in warnings[0], warnings
    same_results(report, local_report)  # nothing lost, nothing different
    reruns = [e for e in events if e.kind == "job_placed" and e.label == killed[0]]
    assert [e.worker.split()[0] for e in reruns] == ["w1", "w0"]


def workers_gone(seconds: float = 10.0) -> bool:
    """No nc-tui worker is left (a killed actor's name goes once Ray has reaped it)."""
    deadline = time.monotonic() + seconds
    while [n for n in ray.util.list_named_actors() if n.startswith("nc-tui-")]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_stop_cancels_the_workers_and_leaves_a_resumable_run(tiny, local_report, tmp_path, quick_polls):
    stop = threading.Event()
    finished = []

    def stop_after_first_trial(event):
        if event.kind == "trial_finished":
            finished.append(event.label)
            stop.set()

    # one search at a time per worker: labels 2 and 3 are still waiting when 0 and 1 finish
    partial = run_scan(config(tiny, tmp_path, "ray", group_size=1), on_event=stop_after_first_trial, stop=stop)
    assert not partial.complete and 1 <= len(finished) < len(LABELS)
    assert workers_gone(), ray.util.list_named_actors()  # the stop killed them
    trials = sorted(p.name for p in (Path(partial.run_dir) / "trials").glob("*.json"))
    assert len(trials) == len(finished)
    resumed = run_scan(None, resume=partial.run_dir)
    same_results(resumed, local_report)


def test_a_model_travels_to_workers_whole(tmp_path, tiny):
    """TorchScript inside, and an architecture from the user's file the workers could not import."""
    (tmp_path / "arch.py").write_text(
        "import torch\nclass Net(torch.nn.Module):\n    def __init__(self):\n"
        "        super().__init__()\n        self.fc = torch.nn.Linear(4, 3)\n"
        "    def forward(self, x):\n        return self.fc(x) * 2\n"
    )
    from nc_engine.models.state_dict import import_object

    net = import_object("arch.py:Net", tmp_path)()
    scripted = torch.jit.load(str(Path(tiny.folder) / "demo_model.pt"))
    model = torch.nn.ModuleDict({"user": net, "script": scripted})
    data = pack_model(model)
    module = net.__class__.__module__
    del sys.modules[module]  # as on a worker: the user's file is not importable there
    try:
        again = unpack_model(data)
    finally:
        sys.modules.pop(module, None)
    x, image = torch.rand(2, 4), torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(again["user"](x), net(x))
    torch.testing.assert_close(again["script"](image), scripted(image))
