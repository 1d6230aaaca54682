"""The max-margin ascent's own Adam is torch.optim.Adam's update to the bit (on the CPU, where torch takes
its single-tensor path), and leaves torch._dynamo unimported."""

import subprocess
import sys

import torch
from torch import nn

from nc_engine.detectors.max_margin import Adam


def test_the_written_out_adam_matches_torch_to_the_bit():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    start = torch.randn(6, 1, 8, 8)
    ours, theirs = start.clone().requires_grad_(True), start.clone().requires_grad_(True)
    mine, torch_adam = Adam(ours, lr=0.05), torch.optim.Adam([theirs], lr=0.05)
    for _ in range(30):
        for param, opt in ((ours, mine), (theirs, torch_adam)):
            opt.zero_grad()
            (-net(torch.sigmoid(param)).logsumexp(1).sum()).backward()
            opt.step()
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, start)  # it moved


def test_a_margin_ascent_does_not_import_dynamo():
    code = (
        "import sys, torch, threading\n"
        "from nc_engine.detectors.max_margin import MarginSettings, max_margins\n"
        "net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))\n"
        "max_margins(net, 3, [1, 4, 4], torch.device('cpu'), MarginSettings(starts=2, steps=3))\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", done.stderr
