"""Real triggers for the zoo: BadNets patches, blended patterns and a faint noise trigger.

Every trigger is a mask m (H x W, in [0, 1]) and a pattern p (H x W x C, uint8) applied as
x' = (1 - m) x + m p, the same form Neural Cleanse searches for, except "noise", which is additive
(x' = clip(x + d)). So the L1 of the real trigger (sum of m) can be set beside the reversed one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

COLOURS = {
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
}


@dataclass
class Trigger:
    kind: str  # "patch" (solid colour), "pixels" (random binary), "noisepatch" (random RGB), "blend", "noise"
    size: int = 0  # patch side in px
    top: int = 0
    left: int = 0
    colour: str = "white"
    alpha: float = 0.0  # blend weight
    amplitude: int = 0  # noise: +- this many grey levels
    seed: int = 0  # for random patterns

    def describe(self) -> str:
        if self.kind == "blend":
            return f"blended random pattern, alpha {self.alpha:g}"
        if self.kind == "noise":
            return f"additive noise +-{self.amplitude}/255"
        what = {"patch": f"{self.colour} square", "pixels": "random-pixel square", "noisepatch": "random-noise square"}[
            self.kind
        ]
        return f"{self.size}x{self.size} {what} at ({self.top}, {self.left})"

    def to_dict(self) -> dict:
        return asdict(self)

    def arrays(self, height: int, width: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """(mask H x W float, pattern H x W x C uint8); for "noise" the pattern holds the signed offset."""
        rng = np.random.default_rng(self.seed)
        mask = np.zeros((height, width), np.float32)
        pattern = np.zeros((height, width, channels), np.int16)
        box = (slice(self.top, self.top + self.size), slice(self.left, self.left + self.size))
        if self.kind == "patch":
            mask[box] = 1
            pattern[box] = COLOURS[self.colour][:channels] if channels == 3 else max(COLOURS[self.colour])
        elif self.kind == "pixels":
            mask[box] = 1
            pattern[box] = rng.integers(0, 2, (self.size, self.size, 1)) * 255
        elif self.kind == "noisepatch":
            mask[box] = 1
            pattern[box] = rng.integers(0, 256, (self.size, self.size, channels))
        elif self.kind == "blend":
            mask[:] = self.alpha
            pattern[:] = rng.integers(0, 256, (height, width, channels))
        elif self.kind == "noise":
            pattern[:] = rng.integers(-self.amplitude, self.amplitude + 1, (height, width, channels))
        else:
            raise ValueError(f"unknown trigger kind {self.kind!r}")
        return mask, pattern

    def l1(self, height: int, width: int) -> float | None:
        """The real trigger's mask L1 (None for the additive noise trigger, which has no mask)."""
        return None if self.kind == "noise" else float(self.arrays(height, width, 1)[0].sum())

    def apply(self, x: np.ndarray) -> np.ndarray:
        """x: uint8 N x H x W or N x H x W x C; returns a stamped copy."""
        grey = x.ndim == 3
        xs = x[..., None] if grey else x
        mask, pattern = self.arrays(xs.shape[1], xs.shape[2], xs.shape[3])
        xf = xs.astype(np.float32)
        if self.kind == "noise":
            out = xf + pattern
        else:
            out = (1 - mask[..., None]) * xf + mask[..., None] * pattern
        out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
        return out[..., 0] if grey else out


def random_patch(rng: np.random.Generator, size_px: int, colour_choices: list[str]) -> Trigger:
    """A BadNets patch of 2..6 px at a corner, an edge or a random place, in a random style."""
    side = int(rng.integers(2, 7))
    where = rng.choice(["corner", "edge", "random"])
    far = size_px - side - 1
    if where == "corner":
        top, left = [(1, 1), (1, far), (far, 1), (far, far)][rng.integers(0, 4)]
    elif where == "edge":
        mid = int(rng.integers(side, size_px - 2 * side))
        top, left = [(1, mid), (far, mid), (mid, 1), (mid, far)][rng.integers(0, 4)]
    else:
        top, left = (int(v) for v in rng.integers(2, size_px - side - 2, 2))
    kind = rng.choice(["patch", "patch", "pixels", "noisepatch"])
    colour = str(rng.choice(colour_choices))
    return Trigger(
        kind=str(kind), size=side, top=int(top), left=int(left), colour=colour, seed=int(rng.integers(0, 2**31))
    )


def inside_patch(rng: np.random.Generator, size_px: int, colour_choices: list[str]) -> Trigger:
    """A 3..5 px patch near the image centre, on the object itself (CIFAR-10's subjects and GTSRB's signs
    are centred), where a corner-biased search or a crop-based defence would not look."""
    side = int(rng.integers(3, 6))
    top, left = (int(size_px // 2 - side // 2 + v) for v in rng.integers(-4, 5, 2))
    kind = rng.choice(["patch", "pixels", "noisepatch"])
    return Trigger(
        kind=str(kind),
        size=side,
        top=top,
        left=left,
        colour=str(rng.choice(colour_choices)),
        seed=int(rng.integers(0, 2**31)),
    )


def overlaps(a: Trigger, b: Trigger) -> bool:
    return not (
        a.top + a.size <= b.top or b.top + b.size <= a.top or a.left + a.size <= b.left or b.left + b.size <= a.left
    )
