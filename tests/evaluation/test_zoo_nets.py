"""The zoo's newer families: a dense-only MLP, and a network shipped with its normalisation and softmax."""

from __future__ import annotations

import tomllib

import torch

from evaluation.zoo import config_text, spec_config, zoo_specs
from evaluation.zoo_nets import ARCHITECTURES, MLP, InsideNormSoftmax
from nc_engine.demo.training import SmallCNN
from nc_engine.models.scan_model import looks_like_probabilities


def test_family_filter_picks_whole_families_with_clean_twins():
    specs = zoo_specs(["mnist-mlp", "mnist-wrapped"])
    assert {(s.dataset, s.arch) for s in specs} == {("mnist", "mlp"), ("mnist", "wrapped")}
    for arch in ("mlp", "wrapped"):
        mine = [s for s in specs if s.arch == arch]
        assert sum(s.kind == "clean" for s in mine) == sum(s.kind != "clean" for s in mine) > 0
    # the older families draw the same specs as before the new ones were appended
    assert [s.name for s in zoo_specs(["mnist"]) if s.arch == "smallcnn"][:3] == [
        "mnist-smallcnn-patch-00",
        "mnist-smallcnn-patch-01",
        "mnist-smallcnn-patch-02",
    ]
    assert list(ARCHITECTURES)[:3] == ["smallcnn", "compact", "resnet8"]


def test_mlp_is_dense_only_and_scripts():
    net = MLP(1, 10)
    assert not any(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    scripted = torch.jit.script(net.eval())
    assert scripted(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_normalisation_and_softmax_inside_the_shipped_model():
    torch.manual_seed(0)
    net = SmallCNN(1, 10).eval()
    shipped = torch.jit.script(InsideNormSoftmax(net, (0.13,), (0.31,)).eval())
    x = torch.rand(4, 1, 28, 28)
    out = shipped(x)
    assert torch.allclose(out.sum(1), torch.ones(4), atol=1e-5)
    assert torch.allclose(out, torch.softmax(net((x - 0.13) / 0.31), 1), atol=1e-6)
    assert looks_like_probabilities(out)  # what [model].outputs = "auto" decides on
    spec = next(s for s in zoo_specs(["mnist-wrapped"]))
    cfg = tomllib.loads(spec_config(spec))
    assert cfg["model"]["mean"] == [0.0] and cfg["model"]["std"] == [1.0]
    assert tomllib.loads(config_text("mnist", "t"))["model"]["mean"] != [0.0]
