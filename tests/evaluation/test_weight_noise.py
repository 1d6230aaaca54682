"""The weight-noise probe (evaluation/weight_noise.py): weights come back as they were, errors are counted
per label, and on the backdoored demo the errors go to the target from the smallest bound on."""

import torch
from torch import nn

from evaluation.weight_noise import NoiseSettings, clean_images, error_shares, ladder, perturbed_predictions
from nc_engine.config.settings import load_config
from nc_engine.models.load import load_model


def test_the_weights_and_their_grad_flags_come_back_as_they_were():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    net[1].weight.requires_grad_(False)
    before = [p.detach().clone() for p in net.parameters()]
    x, y = torch.rand(32, 1, 4, 4), torch.arange(32) % 3
    perturbed_predictions(net, x, y, 0.3, NoiseSettings(steps=3))
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    assert [p.requires_grad for p in net.parameters()] == [False, True, True, True]
    assert all(p.grad is None for p in net.parameters())


def test_errors_are_shared_out_per_label():
    predicted, truth = torch.tensor([0, 2, 2, 2, 1]), torch.tensor([0, 0, 1, 2, 1])
    assert error_shares(predicted, truth, 4) == [0.0, 0.0, 1.0, 0.0]
    assert error_shares(truth, truth, 4) == [0.0] * 4


def test_the_backdoored_demos_errors_go_to_its_target_at_every_bound(demo_backdoored):
    settings = NoiseSettings(ladder=(0.025, 0.05, 0.1))
    x, y = clean_images(demo_backdoored.config, settings.samples, settings.seed)
    model = load_model(load_config(demo_backdoored.config), torch.device("cpu"))
    rungs = ladder(model, x, y, 10, settings)
    assert [r.top_label for r in rungs] == [demo_backdoored.target] * 3
    assert rungs[0].accuracy > rungs[-1].accuracy  # more noise, more errors
