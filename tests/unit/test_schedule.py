"""The cost schedule against the reference rules, step by step."""

import math

import pytest

from nc_engine.detectors.neural_cleanse.schedule import CostSchedule, ScheduleRules

RULES = ScheduleRules(
    init_cost=1e-3,
    cost_up=2.0,
    cost_down=2.0**1.5,
    patience=5,
    attack_success_threshold=0.99,
    early_stop=True,
    early_stop_threshold=1.0,
    early_stop_patience=25,
)


def feed(s: CostSchedule, accs, l1=10.0):
    out = []
    for a in accs:
        out.append(s.update(a, l1))
    return out


def test_lambda_starts_at_zero_and_is_set_after_patience_successes():
    s = CostSchedule(RULES)
    feed(s, [1.0] * 4)
    assert s.cost == 0.0
    feed(s, [1.0])
    assert s.cost == pytest.approx(1e-3)
    assert not s.up_flag and not s.down_flag


def test_a_failure_resets_the_set_counter():
    s = CostSchedule(RULES)
    feed(s, [1.0] * 4 + [0.5] + [1.0] * 4)
    assert s.cost == 0.0
    feed(s, [1.0])
    assert s.cost == pytest.approx(1e-3)


def test_up_after_patience_successes_down_after_patience_failures():
    s = CostSchedule(RULES)
    feed(s, [1.0] * 5)  # cost set; up counter restarts at the same step (counts it as 1)
    assert s.up_counter == 1
    feed(s, [1.0] * 3)
    assert s.cost == pytest.approx(1e-3)
    feed(s, [1.0])
    assert s.cost == pytest.approx(2e-3) and s.up_flag and s.up_counter == 0
    feed(s, [0.5] * 4)
    assert s.cost == pytest.approx(2e-3)
    feed(s, [0.5])
    assert s.cost == pytest.approx(2e-3 / 2**1.5) and s.down_flag and s.down_counter == 0


def test_a_success_resets_the_down_counter_and_vice_versa():
    s = CostSchedule(RULES)
    feed(s, [1.0] * 5)
    feed(s, [0.5] * 4 + [1.0] + [0.5] * 4)
    assert s.cost == pytest.approx(1e-3)


def test_best_is_the_smallest_l1_among_successful_steps():
    s = CostSchedule(RULES)
    assert s.update(0.5, 3.0) == (False, None)  # unsuccessful: not a candidate
    assert s.best_l1 == math.inf
    assert s.update(1.0, 20.0)[0] is True
    assert s.update(1.0, 25.0)[0] is False
    assert s.update(0.995, 15.0)[0] is True
    assert s.best_l1 == 15.0


def test_early_stop_needs_both_directions_then_patience_without_improvement():
    s = CostSchedule(RULES)
    feed(s, [1.0] * 9)  # cost set at step 5, up at step 9
    assert s.up_flag and not s.down_flag
    feed(s, [0.5] * 5)  # down
    assert s.down_flag
    # counter has been counting non-improving steps since the first success; restart it with a new best
    assert s.update(1.0, 5.0) == (True, None)
    reasons = [s.update(1.0, 6.0)[1] for _ in range(25)]
    assert reasons[:24] == [None] * 24 and reasons[24] == "early_stop"


def test_no_early_stop_without_a_down_move():
    s = CostSchedule(RULES)
    reasons = [r for _, r in feed(s, [1.0] * 100)]
    assert s.up_flag and not s.down_flag and set(reasons) == {None}


def test_converge_shortcut_stops_on_a_plateau_only_when_enabled():
    rules = ScheduleRules(converge_window=10, converge_tol=0.02)
    s = CostSchedule(rules)
    l1 = 100.0
    reasons = []
    for step in range(40):
        l1 = l1 * 0.95 if step < 20 else l1  # improves 5% a step, then stalls
        reasons.append(s.update(1.0, l1)[1])
    assert "converged" in reasons
    first = reasons.index("converged")
    assert 20 <= first <= 31
    s_off = CostSchedule(RULES)
    assert "converged" not in [s_off.update(1.0, 50.0)[1] for _ in range(40)]
