"""Damaged or crafted side files (issue 27 items 3, 5 and 8): one line naming the file and what was
expected, never a traceback."""

from __future__ import annotations

import json

import pytest

from nc_engine.errors import MitigationError
from nc_engine.mitigate import filter_images
from nc_engine.mitigate.filter import DETECTOR_KIND

GOOD_DETECTOR = {"config": "c.toml", "layer": "", "units": {"0": [1]}, "mean": [0.0], "std": [1.0], "threshold": 2}


@pytest.mark.parametrize(
    "change, key",
    [
        ({"config": None}, "config"),
        ({"units": [1, 2]}, "units"),
        ({"threshold": "high"}, "threshold"),
        ({"mean": [[0.0]]}, "mean"),
        ({"units": {"zero": [1]}}, "units"),
    ],
)
def test_a_detector_with_a_missing_or_wrong_field_is_one_line(tmp_path, change, key):
    fields = {"kind": DETECTOR_KIND, **GOOD_DETECTOR, **change}
    fields = {k: v for k, v in fields.items() if v is not None}
    (tmp_path / "detector.json").write_text(json.dumps(fields))
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(MitigationError) as err:
        filter_images(tmp_path / "detector.json", [tmp_path / "x.png"])
    text = str(err.value)
    assert "\n" not in text and "detector.json" in text and repr(key) in text, text


def test_a_detector_naming_a_trusted_pickle_config_needs_the_flag(tmp_path):
    (tmp_path / "c.toml").write_text(
        '[model]\nformat = "pickle"\ntrust_pickle = true\npath = "m.pkl"\nnum_classes = 2\ninput_shape = [1, 4, 4]\n'
        '[data]\npath = "d.npz"\n'
    )
    fields = {"kind": DETECTOR_KIND, **GOOD_DETECTOR, "config": str(tmp_path / "c.toml")}
    (tmp_path / "detector.json").write_text(json.dumps(fields))
    with pytest.raises(MitigationError, match="trust_pickle.*--trust-pickle"):
        filter_images(tmp_path / "detector.json", [tmp_path / "x.png"])
