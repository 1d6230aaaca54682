import torch

from nc_engine.detectors.neural_cleanse.trigger import EPS, initial_trigger, raw_from_unit, stamp, unit_from_raw


def test_tanh_map_stays_inside_unit_interval_even_for_huge_parameters():
    raw = torch.tensor([-1e6, -50.0, -1.0, 0.0, 1.0, 50.0, 1e6])
    unit = unit_from_raw(raw)
    assert float(unit.min()) >= 0.0 and float(unit.max()) <= 1.0
    assert float(unit[3]) == 0.5
    # the bound is approached, not clipped: 0.5 +- 1 / (2 - eps)
    assert abs(float(unit[-1]) - (0.5 + 1 / (2 - EPS))) < 1e-6


def test_raw_from_unit_inverts_the_map():
    u = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    assert torch.allclose(unit_from_raw(raw_from_unit(u)), u, atol=1e-9)


def test_stamp_mixes_image_and_pattern_by_the_mask():
    x = torch.zeros(2, 3, 4, 4)
    mask = torch.zeros(4, 4)
    mask[0, 0] = 1.0
    mask[1, 1] = 0.5
    pattern = torch.ones(3, 4, 4)
    out = stamp(x, mask, pattern)
    assert out[:, :, 0, 0].eq(1).all() and out[:, :, 1, 1].eq(0.5).all() and out[:, :, 2, 2].eq(0).all()


def test_initial_trigger_is_seeded_and_uniform_in_unit_space():
    a1, b1 = initial_trigger(7, [3, 8, 8])
    a2, b2 = initial_trigger(7, [3, 8, 8])
    a3, _ = initial_trigger(8, [3, 8, 8])
    assert torch.equal(a1, a2) and torch.equal(b1, b2) and not torch.equal(a1, a3)
    assert a1.shape == (8, 8) and b1.shape == (3, 8, 8)
    m = unit_from_raw(a1)
    assert 0 <= float(m.min()) and float(m.max()) <= 1
