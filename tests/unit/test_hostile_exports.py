"""torch.export archives that run code without a pickle: a shape expression torch hands to sympy (which
evaluates it as Python), and a member stored twice so the check and torch's reader see different copies.
Each crafted from a real archive; the payload writes a marker file when it runs."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from nc_engine.errors import ModelError
from nc_engine.models.exported import unsafe_expression
from nc_engine.models.load import load_model
from tests.unit.test_hostile_files import CPU, WithConstant, make_cfg, one_line, payload_bytes


def dynamic_export(path: Path) -> None:
    """A real archive whose program has symbolic shapes (a dynamic batch), so it holds expr_str fields."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
    batch = torch.export.Dim("batch", min=2, max=64)
    program = torch.export.export(net, (torch.rand(4, 1, 8, 8),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


def members(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as zf:
        return [(i.filename, zf.read(i.filename)) for i in zf.infolist()]


def rewrite(path: Path, entries: list[tuple[str, bytes]]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries:
            zf.writestr(name, data)


def with_expression(entries: list[tuple[str, bytes]], expression: str) -> list[tuple[str, bytes]]:
    """The archive with the first expr_str of its program replaced."""
    out, done = [], False
    for name, data in entries:
        if not done and "/models/" in f"/{name}" and name.endswith(".json") and b'"expr_str"' in data:
            text = data.decode()
            start = text.index('"expr_str"')
            value_start = text.index('"', text.index(":", start)) + 1
            value_end = text.index('"', value_start)
            data = (text[:value_start] + expression.replace('"', '\\"') + text[value_end:]).encode()
            done = True
        out.append((name, data))
    assert done, "the exported program has no shape expression to replace"
    return out


def test_a_dynamic_archive_as_torch_writes_it_still_loads(tmp_path):
    dynamic_export(tmp_path / "ok.pt2")
    model = load_model(make_cfg(tmp_path, {"format": "exported", "path": "ok.pt2"}), CPU)
    assert model(torch.rand(5, 1, 8, 8)).shape == (5, 3)


def test_a_shape_expression_that_runs_code_is_refused_before_torch_reads_it(tmp_path):
    marker = tmp_path / "marker"
    dynamic_export(tmp_path / "evil.pt2")
    payload = f"__import__('pathlib').Path('{marker}').touch() or s0"
    rewrite(tmp_path / "evil.pt2", with_expression(members(tmp_path / "evil.pt2"), payload))
    with pytest.raises(ModelError) as err:
        load_model(make_cfg(tmp_path, {"format": "exported", "path": "evil.pt2"}), CPU)
    one_line(err, "evil.pt2", "a shape expression with", "runs code when it loads", "trust_pickle = true")
    assert not marker.exists()


@pytest.mark.parametrize(
    "expression, why",
    [
        ("s0", None),
        ("2*s0 + 1", None),
        ("Max(1, FloorDiv(s0, 2))", None),
        ("s0 >= 2", None),
        ("1.5*s1", None),
        ("Symbol('s31', positive=True, integer=True)", None),
        ("Add(Mul(Integer(2), Symbol('s0', integer=True)), Integer(1))", None),
        ("eval('1')", "a call of 'eval'"),
        ("s0.__class__", "the character '.'"),
        ("exec(s0)", "a call of 'exec'"),
        ("Max(s0, getattr(s0, s1))", "a call of 'getattr'"),
        ("lambda: s0", "the character ':'"),
        ("s0[0]", "the character '['"),
        ("__import__", "the character '_'"),
        ("Symbol('__x')", "the name"),
        ("Symbol('a b')", "the character"),
        ('Symbol("s0")', "the character"),
    ],
)
def test_only_arithmetic_on_symbols_passes_the_expression_check(expression, why):
    found = unsafe_expression(expression)
    assert (found is None) if why is None else (found is not None and why in found), (expression, found)


def test_a_member_stored_twice_is_refused(tmp_path):
    """The first copy marks a weight use_pickle (torch.load with weights_only=False); the last is benign."""
    marker = tmp_path / "marker"
    path = tmp_path / "twice.pt2"
    torch.export.save(torch.export.export(WithConstant().eval(), (torch.rand(2, 1, 8, 8),)), str(path))
    entries = members(path)
    root = entries[0][0].split("/")[0]
    name = f"{root}/data/weights/model_weights_config.json"
    benign = dict(entries)[name]
    config = json.loads(benign)
    meta = next(iter(config["config"].values()))
    meta["use_pickle"] = True
    evil = [(n, json.dumps(config).encode() if n == name else d) for n, d in entries]
    evil += [(f"{root}/data/weights/{meta['path_name']}", payload_bytes(marker)), (name, benign)]
    rewrite(path, evil)
    with pytest.raises(ModelError) as err:
        load_model(make_cfg(tmp_path, {"format": "exported", "path": "twice.pt2"}), CPU)
    one_line(err, "twice.pt2", "a member stored twice", "could run code", "trust_pickle = true")
    assert not marker.exists()
