"""Hostile input files: no loader runs code from a file without trust_pickle, endless files are refused
before they are read, and nonsense pixels or a dropout left on are caught (issue 12)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nc_engine.config.settings import config_from_dict
from nc_engine.data.load import open_data
from nc_engine.errors import DataError, ModelError
from nc_engine.models.load import load_model
from nc_engine.models.scan_model import forward_is_deterministic, outputs_are_finite
from tests.tiny_scan import linear_model

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this writes `marker`: proof that a loader ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def payload_bytes(marker: Path) -> bytes:
    raw = pickle.dumps(Payload(marker), protocol=2)
    return raw + b"." * (-len(raw) % 8)  # a whole number of float32s, so torch's size check passes


def make_cfg(tmp_path, model=None, data=None):
    table = {
        "model": {"format": "torchscript", "path": "m.pt", "input_shape": [1, 8, 8], **(model or {})},
        "data": {"format": "npz", "path": "d.npz", **(data or {})},
    }
    return config_from_dict(table, source=str(tmp_path / "scan.toml"), base_dir=tmp_path)


def one_line(err, *needles):
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text
    for needle in needles:
        assert needle in text, text


class WithConstant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
        self.c = torch.zeros(3)  # a plain tensor attribute: exported as a constant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + self.c


def crafted_export(path: Path, marker: Path, where: str) -> None:
    """A real torch.export archive, edited so torch.export.load would unpickle `marker`'s payload."""
    torch.export.save(torch.export.export(WithConstant().eval(), (torch.rand(2, 1, 8, 8),)), str(path))
    with zipfile.ZipFile(path) as zf:
        entries = {i.filename: zf.read(i.filename) for i in zf.infolist()}
    root = next(iter(entries)).split("/")[0]
    payload = payload_bytes(marker)
    if where == "sample_inputs":
        entries[f"{root}/data/sample_inputs/model.pt"] = payload
    else:
        kind = "weights" if where == "weight" else "constants"
        config_name = f"{root}/data/{kind}/model_{kind}_config.json"
        config = json.loads(entries[config_name])
        meta = next(iter(config["config"].values()))
        if where == "opaque_constant":
            meta["path_name"] = "opaque_obj_0"  # torch reads these with pickle.loads
        else:
            meta["use_pickle"] = True  # torch reads these with torch.load(weights_only=False)
        entries[config_name] = json.dumps(config).encode()
        entries[f"{root}/data/{kind}/{meta['path_name']}"] = payload
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)


@pytest.mark.parametrize("where", ["weight", "constant", "opaque_constant", "sample_inputs"])
def test_exported_archive_with_a_pickle_is_refused_without_trust(tmp_path, where):
    marker = tmp_path / "marker"
    crafted_export(tmp_path / "evil.pt2", marker, where)
    with pytest.raises(ModelError) as err:
        load_model(make_cfg(tmp_path, {"format": "exported", "path": "evil.pt2"}), CPU)
    one_line(err, "evil.pt2", "runs code when it loads", "trust_pickle = true")
    assert not marker.exists()


def test_exported_archive_in_the_old_pickled_layout_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "old.pt2", "w") as zf:
        zf.writestr("version", "8.0")
        zf.writestr("serialized_exported_program.json", "{}")
    with pytest.raises(ModelError) as err:
        load_model(make_cfg(tmp_path, {"format": "exported", "path": "old.pt2"}), CPU)
    one_line(err, "old.pt2", "old pickled torch.export format")


@pytest.mark.parametrize("fmt", ["state_dict", "torchvision"])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_checkpoint_with_a_malicious_global_runs_nothing(tmp_path, fmt, legacy):
    marker = tmp_path / "marker"
    torch.save(
        {"w": torch.zeros(2), "evil": Payload(marker)}, tmp_path / "w.pt", _use_new_zipfile_serialization=not legacy
    )
    (tmp_path / "net.py").write_text("from torch import nn\nNet = lambda: nn.Linear(2, 2)\n")
    arch = "net.py:Net" if fmt == "state_dict" else "resnet18"
    with pytest.raises(ModelError) as err:
        load_model(make_cfg(tmp_path, {"format": fmt, "path": "w.pt", "architecture": arch}), CPU)
    one_line(err, "w.pt: holds Python objects that weights_only=True will not unpickle")
    assert not marker.exists()


def test_torchscript_loader_does_not_unpickle_arbitrary_globals(tmp_path):
    marker = tmp_path / "marker"
    torch.save({"evil": Payload(marker)}, tmp_path / "m.pt")  # a torch.save zip, not a TorchScript archive
    with pytest.raises(ModelError) as err:
        load_model(make_cfg(tmp_path), CPU)
    one_line(err, "m.pt: not a TorchScript model")
    assert not marker.exists()


def test_npz_with_an_object_array_is_one_line(tmp_path):
    marker = tmp_path / "marker"
    x = np.empty(4, dtype=object)
    x[:] = [Payload(marker)] * 4
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(4))
    with pytest.raises(DataError) as err:
        open_data(make_cfg(tmp_path))
    one_line(err, "d.npz: cannot read arrays x/y", "allow_pickle")
    assert not marker.exists()


def test_npy_with_an_object_array_is_one_line(tmp_path):
    marker = tmp_path / "marker"
    x = np.empty(4, dtype=object)
    x[:] = [Payload(marker)] * 4
    np.save(tmp_path / "x.npy", x, allow_pickle=True)
    np.save(tmp_path / "y.npy", np.arange(4))
    with pytest.raises(DataError) as err:
        open_data(make_cfg(tmp_path, data={"format": "npy", "path": "x.npy"}))
    one_line(err, "x.npy: not a readable .npy file")
    assert not marker.exists()


# ---------------------------------------------------------------- endless and non-regular files


def run_cli(tmp_path: Path, config: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The CLI in a child process with a memory cap and a timeout: a regression fails, it does not hang."""
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30)); "
        "from nc_tui.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        return subprocess.run(
            [sys.executable, "-c", code, "scan", config, "--headless", "--out", str(tmp_path / "out")],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"nc-tui scan {config} did not stop within {timeout}s")


def assert_refused(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def write_config(tmp_path: Path, model_path: str = "m.pt", data_path: str = "d.npz", fmt: str = "npz") -> str:
    path = tmp_path / "scan.toml"
    path.write_text(
        f'[model]\nformat = "torchscript"\npath = "{model_path}"\ninput_shape = [1, 8, 8]\n'
        f'[data]\nformat = "{fmt}"\npath = "{data_path}"\n'
        "[scan]\nsamples = 32\nasr_samples = 32\nbatch_size = 32\nmax_steps = 2\n"
    )
    return str(path)


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_dev_zero_as_the_config(tmp_path):
    assert_refused(run_cli(tmp_path, "/dev/zero"), "/dev/zero: is not a regular file", "TOML config")


def test_config_over_one_mib_is_refused(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text("# padding\n" * 120_000)
    assert_refused(run_cli(tmp_path, str(path)), "big.toml: is 1200000 bytes", "at most 1048576 bytes")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_dev_zero_as_the_model(tmp_path):
    assert_refused(
        run_cli(tmp_path, write_config(tmp_path, model_path="/dev/zero")),
        "/dev/zero: is not a regular file",
        "[model].path",
    )


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
@pytest.mark.parametrize("fmt", ["npz", "npy", "imagefolder"])
def test_dev_zero_as_the_data(tmp_path, fmt):
    linear_model(tmp_path / "m.pt", shape=(1, 8, 8))
    assert_refused(
        run_cli(tmp_path, write_config(tmp_path, data_path="/dev/zero", fmt=fmt)),
        "/dev/zero: is not a regular file",
        "[data].path",
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_as_the_model_and_the_labels(tmp_path):
    os.mkfifo(tmp_path / "m.pt")  # opening a FIFO for reading blocks until a writer comes
    assert_refused(run_cli(tmp_path, write_config(tmp_path)), "m.pt: is not a regular file", "[model].path")
    os.mkfifo(tmp_path / "y.npy")
    np.save(tmp_path / "x.npy", np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(DataError) as err:
        open_data(make_cfg(tmp_path, data={"format": "npy", "path": "x.npy"}))
    one_line(err, "y.npy: is not a regular file", "[data].labels_path")


# ---------------------------------------------------------------- pixels and model mode


def write_pixels(tmp_path, fmt, x):
    if fmt == "npz":
        np.savez(tmp_path / "d.npz", x=x, y=np.arange(len(x)) % 3)
        return make_cfg(tmp_path), "d.npz"
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(len(x)) % 3)
    return make_cfg(tmp_path, data={"format": "npy", "path": "x.npy"}), "x.npy"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fmt", ["npz", "npy"])
def test_nan_or_infinite_pixels_are_refused_with_the_index(tmp_path, bad, fmt):
    x = np.random.default_rng(0).random((300, 8, 8)).astype(np.float32)
    x[280, 3, 2] = bad  # past the rows checked when the file opens: caught when the samples load
    x[290, 0, 0] = bad
    cfg, name = write_pixels(tmp_path, fmt, x)
    source = open_data(cfg)
    source.load(np.array([0, 1, 2]), lambda _: None)  # clean rows load
    with pytest.raises(DataError) as err:
        source.load(np.array([290, 1, 280]), lambda _: None)
    one_line(err, name, "[280] holds NaN or infinite pixel values")
    x[4, 0, 0] = bad  # in the first rows: refused when the file opens
    cfg, name = write_pixels(tmp_path, fmt, x)
    with pytest.raises(DataError) as err:
        open_data(cfg)
    one_line(err, name, "[4] holds NaN or infinite pixel values")


def dropout_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Dropout(0.5), nn.Linear(32, 3))


def test_exported_program_saved_in_train_mode_runs_in_eval_mode(tmp_path):
    net = dropout_net().train()
    program = torch.export.export(net, (torch.rand(2, 1, 8, 8),))
    torch.export.save(program, str(tmp_path / "m.pt2"))
    model = load_model(make_cfg(tmp_path, {"format": "exported", "path": "m.pt2"}), CPU)
    x = torch.rand(16, 1, 8, 8)
    assert forward_is_deterministic(model, x)
    with torch.no_grad():
        assert torch.allclose(model(x), net.eval()(x), atol=1e-5)  # dropout off, as in the eval-mode net


def test_exported_batch_norm_in_train_mode_uses_running_statistics(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(72, 3)).train()
    net(torch.rand(8, 1, 8, 8))  # non-trivial running statistics
    torch.export.save(torch.export.export(net, (torch.rand(2, 1, 8, 8),)), str(tmp_path / "m.pt2"))
    model = load_model(make_cfg(tmp_path, {"format": "exported", "path": "m.pt2"}), CPU)
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(model(x), net.eval()(x), atol=1e-5)


def test_a_trace_made_in_train_mode_is_detected_as_nondeterministic(tmp_path):
    net = dropout_net().train()
    torch.jit.trace(net, torch.rand(2, 1, 8, 8), check_trace=False).save(str(tmp_path / "m.pt"))
    model = load_model(make_cfg(tmp_path), CPU)  # .eval() cannot undo dropout baked into the trace
    assert not forward_is_deterministic(model, torch.rand(16, 1, 8, 8))


def test_forward_is_deterministic_and_outputs_are_finite_on_plain_modules():
    net, x = dropout_net(), torch.rand(16, 1, 8, 8)
    assert not forward_is_deterministic(net.train(), x)
    assert forward_is_deterministic(net.eval(), x)
    assert outputs_are_finite(net, x)
    assert not outputs_are_finite(
        nn.Sequential(net, nn.Softplus(beta=-1.0), nn.LogSigmoid(), nn.Flatten(), nn.Threshold(1e30, float("nan"))), x
    )


def test_a_damaged_trigger_file_costs_only_the_degenerate_marks(tmp_path):
    """The results screen and `report` read the mask size from the trigger files: a damaged one is skipped,
    the next readable one gives the size, and none readable gives None, never an error."""
    from nc_engine.run.runfolder import RunFolder

    folder = RunFolder(tmp_path)
    (tmp_path / "triggers").mkdir()
    folder.trigger_file(0).write_bytes(b"not an npz")
    assert folder.mask_area([0]) is None
    folder.save_trigger(1, np.zeros((28, 28), np.float32), np.zeros((1, 28, 28), np.float32))
    assert folder.mask_area([0, 1]) == 784


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[1, 2]", "expected a JSON object, got a list"),
        ("{bad", "not a readable JSON file"),
        (b"\xff\xfe{}", "not a readable JSON file"),
    ],
)
def test_json_side_files_that_are_not_objects_are_one_line(tmp_path, text, problem):
    """The run folder's fingerprints, a model folder's config.json and a dataset's state.json share one
    reader: each names the file and what was wrong with it."""
    from nc_engine.errors import RunFolderError
    from nc_engine.files import JsonFileProblem, read_json_object
    from nc_engine.run.runfolder import RunFolder

    path = tmp_path / "fingerprints.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(JsonFileProblem, match=problem):
        read_json_object(path)
    with pytest.raises(RunFolderError) as info:
        RunFolder(tmp_path).read_fingerprints()
    message = str(info.value)
    assert message.startswith(f"{path}: damaged (") and problem in message and "\n" not in message
