import numpy as np
import torch
from torch import nn

from nc_engine.detectors.neural_cleanse.asr import attack_success_rate, clean_accuracy


class CornerModel(nn.Module):
    """Predicts class 2 when pixel (0, 0) is bright, else the image's brightness class (0 or 1)."""

    def forward(self, x):
        out = torch.zeros(len(x), 3)
        out[:, 0] = 1.0
        out[x[:, 0, 1, 1] > 0.5, 1] = 2.0
        out[x[:, 0, 0, 0] > 0.5, 2] = 3.0
        return out


def test_asr_excludes_samples_already_of_the_target_class():
    x = torch.zeros(6, 1, 4, 4)
    x[3:, :, 1, 1] = 1.0
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    x[5, :, 0, 0] = 1.0  # the class-2 image already says 2
    mask = np.zeros((4, 4), np.float32)
    mask[0, 0] = 1.0
    pattern = np.ones((1, 4, 4), np.float32)
    assert attack_success_rate(CornerModel(), x, y, mask, pattern, 2) == 1.0  # 5 of 5 non-target images
    half = mask * 0.4  # too faint: nothing flips
    assert attack_success_rate(CornerModel(), x, y, half, pattern, 2) == 0.0
    assert attack_success_rate(CornerModel(), x, y, np.zeros((4, 4), np.float32), pattern, 0) == 0.0
    assert clean_accuracy(CornerModel(), x, y) == 1.0
