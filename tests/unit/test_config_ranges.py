"""Every config value outside its allowed range is one `error:` line naming the key and the range (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest

from nc_engine.config.settings import FLOAT_RANGES, INT_RANGES, config_from_dict
from nc_engine.data.load import open_data
from nc_engine.errors import ConfigError, DataError
from nc_tui.cli import main

BASE = '[model]\nformat = "torchscript"\npath = "m.pt"\ninput_shape = [1, 8, 8]\n'


def cli_error(tmp_path, capsys, text: str) -> str:
    path = tmp_path / "scan.toml"
    path.write_text(text)
    out = tmp_path / "out"
    assert main(["scan", str(path), "--headless", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert str(path) in err
    assert not out.exists()
    return err


@pytest.mark.parametrize(
    "extra, words",
    [
        ("[scan]\nseed = -1\n", ["[scan].seed must be an integer in 0..4294967295", "-1"]),
        ("[scan]\ntrials = 1000000000000\n", ["[scan].trials must be an integer in 1..100", "1000000000000"]),
        ("[scan]\nsamples = 1000000000\n", ["[scan].samples must be an integer in 1..100000"]),
        ("[scan]\nasr_samples = 0\n", ["[scan].asr_samples must be an integer in 1..100000"]),
        ("[scan]\nmax_steps = 1000000000000\n", ["[scan].max_steps must be an integer in 1..100000"]),
        ("[scan]\nbatch_size = 100000\nsamples = 100000\n", ["[scan].batch_size must be an integer in 1..4096"]),
        ("[scan]\nconverge_tol = -0.1\n", ["[scan].converge_tol must be a number in [0, 1)", "-0.1"]),
        ("[scan]\nearly_stop_threshold = -1.0\n", ["[scan].early_stop_threshold must be a number in (0, 10]"]),
        ("[scan]\ncost_up = 0.5\n", ["[scan].cost_up must be a number in [1, 100]"]),
        ("[scan]\nlr = 1e9\n", ["[scan].lr must be a number in (0, 10]"]),
        ("[scan]\nlabels = [-1, 2]\n", ["[scan].labels must be labels in 0..99999"]),
        ("[scan]\nbetas = [0.5, nan]\n", ["[scan].betas must be two numbers in [0, 1)"]),
        ("[detect]\nmin_clean_accuracy = 2.0\n", ["[detect].min_clean_accuracy must be a number in [0, 1]"]),
        ("[data]\nmax_images = -5\n", ["[data].max_images must be an integer in 0..1000000000 (0 = no cap)"]),
    ],
    ids=lambda v: v.split("\n")[1].split(" =")[0] if isinstance(v, str) else None,
)
def test_out_of_range_values_are_one_line(tmp_path, capsys, extra, words):
    err = cli_error(tmp_path, capsys, BASE + extra)
    for word in words:
        assert word in err, err


@pytest.mark.parametrize("shape", ["[1, 100000, 100000]", "[17, 8, 8]", "[3, 8, 5000]"])
def test_input_shape_is_capped(tmp_path, capsys, shape):
    err = cli_error(tmp_path, capsys, BASE.replace("[1, 8, 8]", shape))
    assert "[model].input_shape must be [C, H, W] with C in 1..16 and H, W in 1..4096" in err, err


def test_num_classes_is_capped(tmp_path, capsys):
    err = cli_error(tmp_path, capsys, BASE + "num_classes = 10000000\n")
    assert "[model].num_classes must be an integer in 2..100000" in err, err


@pytest.mark.parametrize(
    "key, value",
    [
        ("path", "m\\n.pt"),
        ("path", "m\\t.pt"),
        ("path", "m\\u0000.pt"),
        ("architecture", "net.py:Net\\r"),
        ("split", "te\\u001bst"),
    ],
)
def test_control_characters_in_strings_are_refused(tmp_path, capsys, key, value):
    section = "data" if key == "split" else "model"
    if key == "split":
        text = BASE + f'[data]\nsplit = "{value}"\n'
    elif key == "path":
        text = BASE.replace('path = "m.pt"', f'path = "{value}"')
    else:
        text = BASE + f'{key} = "{value}"\n'
    err = cli_error(tmp_path, capsys, text)
    assert f"[{section}].{key} must not contain control characters" in err, err


def test_architecture_args_must_be_writable_back(tmp_path, capsys):
    err = cli_error(tmp_path, capsys, BASE + 'architecture_args = {"a b" = 1}\n')
    assert "[model].architecture_args must have keys that are Python names" in err, err
    err = cli_error(tmp_path, capsys, BASE + "architecture_args = {when = 1979-05-27}\n")
    assert "[model].architecture_args must hold strings, numbers, booleans, lists and tables, not a date" in err


def test_mean_and_std_messages_count_channels_right(tmp_path, capsys):
    err = cli_error(tmp_path, capsys, BASE + "mean = [0.1, 0.2]\n")
    assert "[model].mean must be a list of 1 number (finite), got [0.1, 0.2]" in err, err
    err = cli_error(tmp_path, capsys, BASE.replace("[1, 8, 8]", "[3, 8, 8]") + "std = [0.1, 0.2]\n")
    assert "[model].std must be a list of 1 or 3 numbers (finite)" in err, err
    err = cli_error(tmp_path, capsys, BASE + "mean = [inf]\n")
    assert "[model].mean must be a list of 1 number (finite)" in err, err


def test_range_tables_cover_every_numeric_scan_key():
    """A new numeric key gets a range too (or is deliberately bounded elsewhere)."""
    from dataclasses import fields

    from nc_engine.config.settings import DetectConfig, ScanConfig

    ranged = {key for _, key in (*INT_RANGES, *FLOAT_RANGES)}
    elsewhere = {"betas", "labels"}
    for cls in (ScanConfig, DetectConfig):
        for f in fields(cls):
            if any(t in str(f.type) for t in ("int", "float")) and f.name not in elsewhere:
                assert f.name in ranged, f.name


def test_valid_edges_are_accepted(tmp_path):
    table = {
        "model": {"path": "m.pt", "input_shape": [16, 4096, 4096], "mean": [0.5], "num_classes": 100000},
        "scan": {"seed": 2**32 - 1, "trials": 100, "converge_tol": 0.0, "early_stop_threshold": 10.0},
        "detect": {"min_clean_accuracy": 0.0},
    }
    cfg = config_from_dict(table, source=str(tmp_path / "scan.toml"), base_dir=tmp_path)
    assert cfg.scan.seed == 2**32 - 1


def test_five_channel_arrays_are_not_reported_as_28_channel_images(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 5, 28, 28), np.uint8), y=np.arange(4) % 2)
    table = {"model": {"path": "m.pt", "input_shape": [3, 28, 28]}, "data": {"path": "d.npz"}}
    cfg = config_from_dict(table, source=str(tmp_path / "scan.toml"), base_dir=tmp_path)
    with pytest.raises(DataError) as err:
        open_data(cfg)
    text = str(err.value)
    assert "\n" not in text and "28-channel" not in text
    assert "cannot tell which axis holds the channels" in text and "set [data].layout" in text, text
    table["data"]["layout"] = "NCHW"  # told: the real count is named
    cfg = config_from_dict(table, source=str(tmp_path / "scan.toml"), base_dir=tmp_path)
    with pytest.raises(DataError, match="cannot convert 5-channel images to the 3 channels"):
        open_data(cfg).load(np.array([0, 1]), lambda _: None)


def test_config_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError):
        config_from_dict({"scan": {"seed": -1}}, source="s.toml", base_dir=tmp_path)
