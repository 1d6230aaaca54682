"""Model loading: formats, checkpoint wrappers, and one-line errors."""

import pytest
import torch
from torch import nn

from nc_engine.config.settings import config_from_dict
from nc_engine.errors import ModelError
from nc_engine.models.load import load_model
from nc_engine.models.state_dict import load_checkpoint

ARCH = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, classes)

    def forward(self, x):
        return self.fc(x.flatten(1))

class Probs(Net):
    def forward(self, x):
        return torch.softmax(super().forward(x), 1)
"""


def make_cfg(tmp_path, **model):
    table = {
        "format": "state_dict",
        "path": "w.pt",
        "architecture": "arch.py:Net",
        "num_classes": 4,
        "input_shape": [3, 8, 8],
        **model,
    }
    return config_from_dict({"model": table}, source=str(tmp_path / "c.toml"), base_dir=tmp_path)


@pytest.fixture
def arch(tmp_path):
    (tmp_path / "arch.py").write_text(ARCH)
    torch.manual_seed(0)
    net = nn.Linear(3 * 8 * 8, 4)
    return {"fc.weight": net.weight.detach(), "fc.bias": net.bias.detach()}


@pytest.mark.parametrize("wrap", ["bare", "state_dict", "model", "model_state_dict", "module"])
def test_state_dict_wrappers_load(tmp_path, arch, wrap):
    state = {f"module.{k}": v for k, v in arch.items()} if wrap == "module" else arch
    obj = state if wrap in ("bare", "module") else {wrap: state, "epoch": 3}
    torch.save(obj, tmp_path / "w.pt")
    model = load_model(make_cfg(tmp_path), torch.device("cpu"))
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(model(x), x.flatten(1) @ arch["fc.weight"].T + arch["fc.bias"], atol=1e-6)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_normalisation_is_applied_inside_the_wrapper(tmp_path, arch):
    torch.save(arch, tmp_path / "w.pt")
    model = load_model(make_cfg(tmp_path, mean=[0.5], std=[0.25]), torch.device("cpu"))
    x = torch.rand(2, 3, 8, 8)
    expected = ((x - 0.5) / 0.25).flatten(1) @ arch["fc.weight"].T + arch["fc.bias"]
    assert torch.allclose(model(x), expected, atol=1e-5)


def test_probability_outputs_are_detected_and_turned_into_log_probabilities(tmp_path, arch):
    torch.save(arch, tmp_path / "w.pt")
    model = load_model(make_cfg(tmp_path, architecture="arch.py:Probs"), torch.device("cpu"))
    assert model.log_probs
    out = model(torch.rand(3, 3, 8, 8))
    assert torch.allclose(out.exp().sum(1), torch.ones(3), atol=1e-5)
    assert not load_model(make_cfg(tmp_path), torch.device("cpu")).log_probs


def test_mismatched_checkpoint_lists_missing_and_unexpected_keys(tmp_path, arch):
    torch.save({"fc.weight": arch["fc.weight"], "head.bias": arch["fc.bias"]}, tmp_path / "w.pt")
    with pytest.raises(ModelError) as err:
        load_model(make_cfg(tmp_path), torch.device("cpu"))
    assert "missing keys: fc.bias" in str(err.value) and "unexpected keys: head.bias" in str(err.value)


@pytest.mark.parametrize("content", [b"\x00\x01garbage" * 100, b"just some text\n"])
def test_not_a_checkpoint(tmp_path, content):
    (tmp_path / "w.pt").write_bytes(content)
    with pytest.raises(ModelError, match="not a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "w.pt")


def test_weights_only_refuses_pickled_objects(tmp_path):
    torch.save(nn.Linear(2, 2), tmp_path / "w.pt")
    with pytest.raises(ModelError, match="trust_pickle"):
        load_checkpoint(tmp_path / "w.pt")


def test_pickle_format_loads_a_whole_module_when_trusted(tmp_path, arch):
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(192, 4)), tmp_path / "m.pkl")
    cfg = make_cfg(tmp_path, format="pickle", path="m.pkl", architecture="", trust_pickle=True)
    assert load_model(cfg, torch.device("cpu"))(torch.rand(1, 3, 8, 8)).shape == (1, 4)


def test_torchscript_and_torchvision_formats(tmp_path):
    import torchvision

    net = nn.Sequential(nn.Flatten(), nn.Linear(192, 4)).eval()
    torch.jit.script(net).save(str(tmp_path / "m.pt"))
    cfg = make_cfg(tmp_path, format="torchscript", path="m.pt", architecture="")
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(load_model(cfg, torch.device("cpu"))(x), net(x), atol=1e-6)
    tv = torchvision.models.get_model("resnet18", num_classes=4).eval()
    torch.save(tv.state_dict(), tmp_path / "rn.pt")
    cfg = make_cfg(tmp_path, format="torchvision", path="rn.pt", architecture="resnet18", input_shape=[3, 32, 32])
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(load_model(cfg, torch.device("cpu"))(x), tv(x), atol=1e-5)


def test_errors_for_shape_classes_missing_file_and_bad_architecture(tmp_path, arch):
    torch.save(arch, tmp_path / "w.pt")
    with pytest.raises(ModelError, match=r"input of shape \[N, 1, 28, 28\]"):
        load_model(make_cfg(tmp_path, input_shape=[1, 28, 28]), torch.device("cpu"))
    with pytest.raises(ModelError, match="4 outputs but \\[model\\].num_classes = 10"):
        load_model(make_cfg(tmp_path, num_classes=10), torch.device("cpu"))
    with pytest.raises(ModelError, match="not found"):
        load_model(make_cfg(tmp_path, path="nope.pt"), torch.device("cpu"))
    (tmp_path / "broken.py").write_text("import not_a_module_anywhere\n")
    with pytest.raises(ModelError, match="ModuleNotFoundError: No module named 'not_a_module_anywhere'"):
        load_model(make_cfg(tmp_path, architecture="broken.py:Net"), torch.device("cpu"))
    with pytest.raises(ModelError, match="has no 'Nett'"):
        load_model(make_cfg(tmp_path, architecture="arch.py:Nett"), torch.device("cpu"))


def test_a_tiny_probability_still_has_a_gradient():
    """A model with its softmax inside: the label a search aims at can sit at 1e-20 on a stamped image.
    Its log-probability must still move with the input, or that label's search never starts."""
    import torch
    from torch import nn

    from nc_engine.models.scan_model import ScanModel

    class Confident(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = torch.stack([x.flatten(1).sum(1) * 0.0 - 46.0, x.flatten(1).sum(1)], 1)  # p0 ~ 1e-20
            return torch.softmax(logits, 1)

    model = ScanModel(Confident(), [0.0], [1.0], log_probs=True, num_classes=2)
    x = torch.full((1, 1, 4, 4), 0.5, requires_grad=True)
    out = model(x)
    assert out[0, 0].item() < -40  # the real log-probability, not the floor's
    (-out[0, 0]).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
