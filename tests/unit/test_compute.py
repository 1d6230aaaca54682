"""[compute]: its keys and their one-line errors, the missing-Ray message, and how workers are planned
(no Ray needed: tests/integration/test_ray_scan.py runs real Ray workers)."""

from __future__ import annotations

import importlib.util

import pytest

from nc_engine.compute.backend import check_ray
from nc_engine.compute.workers import worker_plan
from nc_engine.config.settings import ComputeConfig, config_from_dict, config_to_toml, load_config
from nc_engine.errors import ComputeError, ConfigError
from nc_tui.cli import main

BASE = '[model]\nformat = "torchscript"\npath = "m.pt"\ninput_shape = [1, 8, 8]\n'


def load(tmp_path, extra: str):
    path = tmp_path / "scan.toml"
    path.write_text(BASE + extra)
    return load_config(path)


def test_compute_defaults_to_the_local_backend(tmp_path):
    c = load(tmp_path, "").compute
    assert (c.backend, c.address, c.devices, c.workers) == ("local", "", "all", 0)


def test_compute_keys_survive_the_run_folder_config(tmp_path):
    cfg = load(tmp_path, '[compute]\nbackend = "ray"\ndevices = [0, "cuda:1"]\nworkers = 3\n')
    again = tmp_path / "again.toml"
    again.write_text(config_to_toml(cfg))
    c = load_config(again).compute
    assert (c.backend, c.devices, c.workers) == ("ray", [0, "cuda:1"], 3)


@pytest.mark.parametrize(
    "extra, words",
    [
        ('[compute]\nbackend = "dask"\n', "[compute].backend must be one of local, ray, got 'dask'"),
        ("[compute]\nnodes = 4\n", "unknown key [compute].nodes (known keys: backend, address, devices, workers)"),
        ("[compute]\nworkers = -1\n", "[compute].workers must be an integer in 0..4096 (0 = one per device), got -1"),
        ('[compute]\ndevices = "gpu"\n', '[compute].devices must be "all", "cpu" or a non-empty list'),
        ('[compute]\ndevices = [0, "cuda:0"]\n', "[compute].devices must be GPUs without repeats"),
        ("[compute]\ndevices = [-1]\n", '[compute].devices must be "all", "cpu" or a non-empty list'),
        ('[compute]\naddress = "auto"\ndevices = [0, 1]\n', "[compute].devices lists local GPUs, which only applies"),
        ("[compute]\naddress = 6379\n", "[compute].address must be a string, got integer 6379"),
    ],
)
def test_bad_compute_values_are_one_line(tmp_path, capsys, extra, words):
    path = tmp_path / "scan.toml"
    path.write_text(BASE + extra)
    out = tmp_path / "out"
    assert main(["scan", str(path), "--headless", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and str(path) in err, err
    assert words in err, err
    assert not out.exists()
    with pytest.raises(ConfigError):
        config_from_dict({"compute": {"backend": "dask"}}, source="s.toml", base_dir=tmp_path)


def test_ray_backend_without_ray_names_the_extra(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    check_ray(load(tmp_path, ""))  # the local backend never asks for Ray
    cfg = load(tmp_path, '[compute]\nbackend = "ray"\n')
    with pytest.raises(ComputeError, match=r'needs Ray, which is not installed: pip install "nc-tui\[ray\]"'):
        check_ray(cfg)
    # the command line says it in one line before anything is loaded or written
    out = tmp_path / "out"
    assert main(["scan", str(tmp_path / "scan.toml"), "--headless", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "nc-tui[ray]"' in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "compute, device, resources, jobs, expected",
    [
        (ComputeConfig(), "auto", {"CPU": 2.0}, 10, (2, {"num_cpus": 1}, False)),  # one per CPU
        (ComputeConfig(workers=1), "auto", {"CPU": 16.0}, 10, (1, {"num_cpus": 16}, False)),  # one worker, all CPUs
        (ComputeConfig(workers=4), "auto", {"CPU": 2.0}, 10, (4, {"num_cpus": 0.5}, False)),  # more than CPUs
        (ComputeConfig(), "auto", {"CPU": 64.0, "GPU": 8.0}, 43, (8, {"num_gpus": 1.0, "num_cpus": 1}, True)),
        (ComputeConfig(), "auto", {"CPU": 64.0, "GPU": 8.0}, 3, (3, {"num_gpus": 1.0, "num_cpus": 1}, True)),
        (ComputeConfig(workers=3), "auto", {"CPU": 8.0, "GPU": 2.0}, 10, (3, {"num_gpus": 0.5, "num_cpus": 1}, True)),
        (ComputeConfig(devices="cpu"), "auto", {"CPU": 8.0, "GPU": 2.0}, 10, (8, {"num_cpus": 1}, False)),
        (ComputeConfig(), "cpu", {"CPU": 8.0, "GPU": 2.0}, 10, (8, {"num_cpus": 1}, False)),  # [scan].device = cpu
    ],
)
def test_worker_plan(compute, device, resources, jobs, expected):
    assert worker_plan(compute, device, resources, jobs) == expected
