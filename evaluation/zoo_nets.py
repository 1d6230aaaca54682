"""The zoo's architectures: small enough to train in minutes on two CPU cores, scripted for TorchScript."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nc_engine.demo.training import SmallCNN


class CompactCNN(nn.Module):
    """Two VGG-style blocks (2 conv each) and a dense head: the usual compact CIFAR/GTSRB network."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1),
            nn.BatchNorm2d(4 * w),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.fc1 = nn.Linear(4 * w * 16, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(self.features(x).flatten(1))))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.short(x))


class ResNet8(nn.Module):
    """A CIFAR-style ResNet (3 stages of one basic block, 16/32/64 channels, global pooling)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.layers = nn.Sequential(BasicBlock(w, w, 1), BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 4 * w, 2))
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1))


class MLP(nn.Module):
    """Dense layers only (784-256-128-10 on MNIST): the shape of much teaching material and small deployments."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, size: int = 28) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * size * size, 256),
            nn.ReLU(),
            nn.Linear(256, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class InsideNormSoftmax(nn.Module):
    """A trained network shipped with its input normalisation and a softmax inside: it takes [0, 1] pixels
    and returns probabilities, as many exported models do (the scan config then gives mean 0, std 1)."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net((x - self.mean) / self.std), dim=1)


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, channels), _conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet9(nn.Module):
    """The DAWNBench ResNet-9 (Page, 2018) at half width (32/64/128/256 channels, 1.6 M weights): with
    augmented training on a GPU it reaches the accuracy users' CIFAR-10 models have (85-90 %)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn(in_channels, w),
            _conv_bn(w, 2 * w),
            nn.MaxPool2d(2),
            Residual(2 * w),
            _conv_bn(2 * w, 4 * w),
            nn.MaxPool2d(2),
            _conv_bn(4 * w, 8 * w),
            nn.MaxPool2d(2),
            Residual(8 * w),
            nn.AdaptiveMaxPool2d(1),
        )
        self.fc = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


# Appended only: a spec's random draws are seeded by its architecture's position here.
ARCHITECTURES = {
    "smallcnn": ("SmallCNN (2 conv + 2 dense)", lambda c, n: SmallCNN(in_channels=c, num_classes=n)),
    "compact": ("CompactCNN (5 conv with batch norm + 2 dense)", lambda c, n: CompactCNN(c, n, width=24)),
    "resnet8": ("ResNet-8 (3 residual stages, 16/32/64 channels)", lambda c, n: ResNet8(c, n)),
    "mlp": ("MLP (dense only, 784-256-128-10)", lambda c, n: MLP(c, n)),
    "wrapped": ("SmallCNN with normalisation and softmax inside", lambda c, n: SmallCNN(in_channels=c, num_classes=n)),
    "resnet9": ("ResNet-9 (half width, augmented training)", lambda c, n: ResNet9(c, n)),
}
AUGMENTED = {"resnet9"}  # trained by evaluation/zoo_train.py (crops, flips, one-cycle SGD): a GPU's work
NORMALISED_INSIDE = {"wrapped"}  # exported as InsideNormSoftmax: the scan config gives mean 0, std 1
