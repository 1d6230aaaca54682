"""Model formats from the optional extras (issue 13): safetensors weights, timm, Hugging Face folders.

Every model here is built offline, saved to tmp_path, loaded through a config and compared with the original.
"""

import pytest
import torch

from nc_engine.config import config_from_dict
from nc_engine.errors import ConfigError, ModelError
from nc_engine.models import load_model

ARCH = '''
from torch import nn

class Net(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, classes)

    def forward(self, x):
        return self.fc(self.conv(x).relu().flatten(1))
'''


def make_cfg(tmp_path, **model):
    table = {"format": "state_dict", "path": "w.safetensors", "architecture": "arch.py:Net",
             "input_shape": [3, 8, 8], **model}
    return config_from_dict({"model": table}, source=str(tmp_path / "c.toml"), base_dir=tmp_path)


def same_outputs(model, net, shape, mean=0.0, std=1.0):
    x = torch.rand((5, *shape), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), net((x - mean) / std), atol=1e-5, rtol=1e-5)


@pytest.fixture
def net(tmp_path):
    (tmp_path / "arch.py").write_text(ARCH)
    torch.manual_seed(0)
    from importlib.util import module_from_spec, spec_from_file_location
    spec = spec_from_file_location("arch_for_test", tmp_path / "arch.py")
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Net().eval()


def test_safetensors_state_dict_loads_by_extension_and_by_key(tmp_path, net):
    from safetensors.torch import save_file
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    same_outputs(load_model(make_cfg(tmp_path), torch.device("cpu")), net, (3, 8, 8))
    (tmp_path / "w.safetensors").rename(tmp_path / "weights.bin")
    cfg = make_cfg(tmp_path, path="weights.bin", weights="safetensors")
    same_outputs(load_model(cfg, torch.device("cpu")), net, (3, 8, 8))


def test_safetensors_torchvision_weights(tmp_path):
    import torchvision
    from safetensors.torch import save_file
    torch.manual_seed(0)
    tv = torchvision.models.get_model("resnet18", weights=None, num_classes=3).eval()
    save_file(tv.state_dict(), str(tmp_path / "rn.safetensors"))
    cfg = make_cfg(tmp_path, format="torchvision", architecture="resnet18", path="rn.safetensors",
                   input_shape=[3, 32, 32])
    model = load_model(cfg, torch.device("cpu"))
    assert model.num_classes == 3
    same_outputs(model, tv, (3, 32, 32))


@pytest.mark.parametrize("content", [b"", b"\x08\x00\x00\x00\x00\x00\x00\x00{not json", b"PK\x03\x04zip?"])
def test_corrupt_safetensors_is_one_line_naming_the_file(tmp_path, net, content):
    (tmp_path / "w.safetensors").write_bytes(content)
    with pytest.raises(ModelError) as err:
        load_model(make_cfg(tmp_path), torch.device("cpu"))
    assert "w.safetensors" in str(err.value) and "\n" not in str(err.value)


def test_torch_checkpoint_named_by_key_is_not_read_as_safetensors(tmp_path, net):
    torch.save(net.state_dict(), tmp_path / "w.safetensors")
    same_outputs(load_model(make_cfg(tmp_path, weights="torch"), torch.device("cpu")), net, (3, 8, 8))
    with pytest.raises(ModelError, match="not a safetensors file"):
        load_model(make_cfg(tmp_path), torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"\[model\]\.weights"):
        make_cfg(tmp_path, weights="pickle")
