"""A [scan]'s budget and a [detect]'s cut as they run: the user's value where set, else the preset's or
the statistic's default, the same numbers Config.resolved holds."""

import dataclasses

from nc_engine.config.settings import PRESETS, Budget, config_from_dict


def test_the_budget_is_the_presets_with_the_users_keys_over_them():
    cfg = config_from_dict({"model": {"path": "m.pt"}, "scan": {"preset": "fast", "max_steps": 77}})
    budget = cfg.scan.budget()
    assert budget == Budget(**{**PRESETS["fast"], "max_steps": 77})
    assert cfg.scan.max_steps == 77 and cfg.scan.samples is None  # the config keeps "the preset's"
    resolved = cfg.resolved()
    assert {k: getattr(resolved.scan, k) for k in dataclasses.asdict(budget)} == dataclasses.asdict(budget)


def test_the_cut_and_floor_follow_the_statistic_unless_given():
    plain = config_from_dict({"model": {"path": "m.pt"}, "detect": {"statistic": "l1"}})
    assert (plain.detect.cut(), plain.detect.floor()) == (2.0, 0.0)
    given = config_from_dict({"model": {"path": "m.pt"}, "detect": {"threshold": 1.5, "spread_floor": 0.2}})
    assert (given.detect.cut(), given.detect.floor()) == (1.5, 0.2)
    resolved = given.resolved().detect
    assert (resolved.threshold, resolved.spread_floor) == (1.5, 0.2)
