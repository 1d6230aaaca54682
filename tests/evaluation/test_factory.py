"""The product tests' MNIST model (tests/factory.py) is the zoo's (evaluation/zoo.py): same config file,
same manifest, same weights, so the tests that moved off the lab still test the model they did."""

import json

import pytest
import torch

from tests.conftest import require_shared


def test_the_config_file_is_the_zoos():
    from evaluation import zoo
    from tests import factory

    require_shared(zoo.MNIST)
    assert factory.MNIST == zoo.MNIST
    assert factory.mnist_config_text() == zoo.config_text("mnist", factory.TITLE)


@pytest.mark.slow
def test_the_trained_model_is_the_zoos(tmp_path):
    from evaluation import zoo
    from tests import factory

    require_shared(zoo.MNIST)
    ours = factory.train_mnist(tmp_path / "factory", backdoor=True, seed=0, n_train=3000, epochs=1)
    theirs = zoo.train_mnist(tmp_path / "zoo", backdoor=True, seed=0, n_train=3000, epochs=1)
    for m in (ours, theirs):
        m.pop("train_seconds")
        m["data"] = str(m["data"])
    assert json.dumps(ours, sort_keys=True) == json.dumps(theirs, sort_keys=True)
    a = torch.jit.load(str(tmp_path / "factory" / "model.pt")).state_dict()
    b = torch.jit.load(str(tmp_path / "zoo" / "model.pt")).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "factory" / "config.toml").read_text() == (tmp_path / "zoo" / "config.toml").read_text()
