"""Model formats from the optional extras (issue 13): safetensors weights, timm, Hugging Face folders.

Every model here is built offline, saved to tmp_path, loaded through a config and compared with the original.
"""

import pytest
import torch

from nc_engine.config.settings import config_from_dict
from nc_engine.errors import ConfigError, ModelError
from nc_engine.models.load import load_model
from tests.conftest import require_module

ARCH = """
from torch import nn

class Net(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, classes)

    def forward(self, x):
        return self.fc(self.conv(x).relu().flatten(1))
"""


def make_cfg(tmp_path, **model):
    table = {
        "format": "state_dict",
        "path": "w.safetensors",
        "architecture": "arch.py:Net",
        "input_shape": [3, 8, 8],
        **model,
    }
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
    cfg = make_cfg(
        tmp_path, format="torchvision", architecture="resnet18", path="rn.safetensors", input_shape=[3, 32, 32]
    )
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


def timm_cfg(tmp_path, **model):
    table = {"format": "timm", "architecture": "test_resnet", "path": "m.pt", **model}
    return config_from_dict({"model": table}, source=str(tmp_path / "c.toml"), base_dir=tmp_path)


@pytest.fixture
def timm_net():
    timm = require_module("timm")
    torch.manual_seed(0)
    return timm.create_model("test_resnet", pretrained=False, num_classes=3).eval()


@pytest.mark.parametrize("save", ["state_dict", "safetensors", "training_checkpoint"])
def test_timm_checkpoints_load_with_equal_outputs(tmp_path, timm_net, save):
    import argparse

    from safetensors.torch import save_file

    state = timm_net.state_dict()
    path = tmp_path / ("m.safetensors" if save == "safetensors" else "m.pt")
    if save == "safetensors":
        save_file(state, str(path))
    elif save == "state_dict":
        torch.save(state, path)
    else:  # what timm's CheckpointSaver writes: the args are an argparse.Namespace
        torch.save(
            {
                "epoch": 3,
                "arch": "test_resnet",
                "state_dict": state,
                "state_dict_ema": state,
                "args": argparse.Namespace(lr=0.1, model="test_resnet"),
                "version": 2,
            },
            path,
        )
    model = load_model(
        timm_cfg(tmp_path, path=path.name, input_shape=[3, 32, 32], mean=[0.0], std=[1.0]), torch.device("cpu")
    )
    assert model.num_classes == 3  # read from the checkpoint's head
    same_outputs(model, timm_net, (3, 32, 32))


def test_timm_preprocessing_defaults_to_the_models_own(tmp_path, timm_net):
    from nc_engine.run.prepare import with_model_classes

    torch.save(timm_net.state_dict(), tmp_path / "m.pt")
    cfg = timm_cfg(tmp_path)
    model = load_model(cfg, torch.device("cpu"))
    assert model.preprocessing == {"mean": [0.5] * 3, "std": [0.5] * 3, "input_shape": [3, 160, 160]}
    same_outputs(model, timm_net, (3, 160, 160), mean=0.5, std=0.5)
    recorded = with_model_classes(cfg, model).model
    assert (recorded.mean, recorded.input_shape, recorded.num_classes) == ([0.5] * 3, [3, 160, 160], 3)
    given = load_model(timm_cfg(tmp_path, input_shape=[3, 32, 32], std=[0.25]), torch.device("cpu"))
    assert given.preprocessing == {"mean": [0.5] * 3, "std": [0.25], "input_shape": [3, 32, 32]}


def test_timm_errors_are_one_line(tmp_path, timm_net):
    torch.save(timm_net.state_dict(), tmp_path / "m.pt")
    for cfg, match in [
        (timm_cfg(tmp_path, architecture="no_such_net"), "not a timm model name"),
        (timm_cfg(tmp_path, architecture_args={"pretrained": True}), "never downloads"),
        (timm_cfg(tmp_path, architecture_args={"checkpoint_path": "x.pth"}), "never downloads"),
        (timm_cfg(tmp_path, architecture="resnet10t"), "does not match the architecture"),
    ]:
        with pytest.raises(ModelError, match=match) as err:
            load_model(cfg, torch.device("cpu"))
        assert "\n" not in str(err.value)


@pytest.fixture
def hf_folder(tmp_path):
    transformers = require_module("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
        id2label={0: "cat", 1: "dog", 2: "cow"},
        label2id={"cat": 0, "dog": 1, "cow": 2},
    )
    net = transformers.ViTForImageClassification(config).eval()
    folder = tmp_path / "vit"
    net.save_pretrained(folder)
    transformers.ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.4]
    ).save_pretrained(folder)
    return folder, net


def test_huggingface_folder_loads_with_its_own_preprocessing_and_names(tmp_path, hf_folder):
    folder, net = hf_folder
    assert (folder / "model.safetensors").is_file()
    cfg = config_from_dict(
        {"model": {"format": "huggingface", "path": "vit"}}, source=str(tmp_path / "c.toml"), base_dir=tmp_path
    )
    model = load_model(cfg, torch.device("cpu"))
    assert model.preprocessing == {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.3, 0.4], "input_shape": [3, 32, 32]}
    assert model.num_classes == 3 and model.class_names == ["cat", "dog", "cow"]
    x = torch.rand((5, 3, 32, 32), generator=torch.Generator().manual_seed(1))
    mean, std = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1), torch.tensor([0.2, 0.3, 0.4]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(pixel_values=(x - mean) / std).logits, atol=1e-5, rtol=1e-5)


def test_huggingface_folder_errors_are_one_line(tmp_path, hf_folder):
    folder, _ = hf_folder
    (folder / "config.json").unlink()
    (tmp_path / "file.bin").write_bytes(b"x")
    for path, match in [("vit", "no config.json"), ("file.bin", "expected a folder"), ("absent", "expected a folder")]:
        cfg = config_from_dict(
            {"model": {"format": "huggingface", "path": path}}, source=str(tmp_path / "c.toml"), base_dir=tmp_path
        )
        with pytest.raises(ModelError, match=match) as err:
            load_model(cfg, torch.device("cpu"))
        assert "\n" not in str(err.value) and path in str(err.value)


def test_huggingface_backbone_without_a_classifier_is_refused(tmp_path, hf_folder):
    import transformers

    folder, net = hf_folder
    transformers.ViTModel(net.config).save_pretrained(tmp_path / "base")  # no classifier weights
    cfg = config_from_dict(
        {"model": {"format": "huggingface", "path": "base"}}, source=str(tmp_path / "c.toml"), base_dir=tmp_path
    )
    with pytest.raises(ModelError, match="lack .* classifier") as err:
        load_model(cfg, torch.device("cpu"))
    assert "\n" not in str(err.value)


def test_huggingface_model_on_parquet_data_prepares_with_its_own_preprocessing(tmp_path, hf_folder):
    require_module("pyarrow")
    from nc_engine.run.prepare import prepare
    from tests.unit.test_parquet_data import write

    write(tmp_path / "d.parquet", n=30, names=())  # no hub class names: the model's id2label are used
    table = {
        "model": {"format": "huggingface", "path": "vit"},
        "data": {"format": "parquet", "path": "d.parquet"},
        "scan": {"samples": 12, "asr_samples": 12, "batch_size": 4, "device": "cpu"},
    }
    cfg = config_from_dict(table, source=str(tmp_path / "c.toml"), base_dir=tmp_path)
    p = prepare(cfg, lambda m: None)
    assert p.cfg.model.mean == [0.4, 0.5, 0.6] and p.cfg.model.input_shape == [3, 32, 32]
    assert p.cfg.model.num_classes == 3 and p.data.class_names == ["cat", "dog", "cow"]
    assert p.data.x_opt.shape[1:] == (3, 32, 32)  # the 8x8 images resized to the model's own size


def test_huggingface_folder_naming_a_shard_outside_itself_is_refused(tmp_path, hf_folder):
    """Issue 28 item 3: a sharded checkpoint's index naming ../outside.safetensors was loaded."""
    folder, _ = hf_folder
    (folder / "model.safetensors").rename(tmp_path / "outside.safetensors")
    (folder / "model.safetensors.index.json").write_text(
        '{"metadata": {}, "weight_map": {"vit.embeddings.cls_token": "../outside.safetensors"}}'
    )
    cfg = config_from_dict(
        {"model": {"format": "huggingface", "path": "vit"}}, source=str(tmp_path / "c.toml"), base_dir=tmp_path
    )
    with pytest.raises(ModelError, match="outside.safetensors: leads outside") as err:
        load_model(cfg, torch.device("cpu"))
    assert "\n" not in str(err.value)
    (folder / "model.safetensors.index.json").unlink()
    (folder / "model.safetensors").symlink_to(tmp_path / "outside.safetensors")  # a link out: refused too
    with pytest.raises(ModelError, match="model.safetensors: leads outside"):
        load_model(cfg, torch.device("cpu"))
