"""The cost (lambda) schedule, best-trigger tracking and early stop of one trigger search.

One `update` per step, in the reference order: keep best, check early stop, then adjust lambda.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ScheduleRules:
    init_cost: float = 1e-3
    cost_up: float = 2.0
    cost_down: float = 2.0**1.5
    patience: int = 5
    attack_success_threshold: float = 0.99  # attack accuracy that counts as success
    early_stop: bool = True
    early_stop_threshold: float = 1.0
    early_stop_patience: int = 25
    converge_window: int = 0  # shortcut, 0 = off
    converge_tol: float = 0.0


@dataclass
class SearchSettings:
    """Everything one trigger search needs besides its job: the rules and the optimiser's budget."""

    rules: ScheduleRules
    lr: float = 0.1
    betas: tuple[float, float] = (0.5, 0.9)
    adam_eps: float = 1e-8
    batch_size: int = 32
    max_steps: int = 1000
    bf16: bool = False
    channels_last: bool = False


@dataclass
class CostSchedule:
    rules: ScheduleRules
    cost: float = 0.0
    set_counter: int = 0
    up_counter: int = 0
    down_counter: int = 0
    up_flag: bool = False
    down_flag: bool = False
    best_l1: float = math.inf
    early_stop_best: float = math.inf
    early_stop_counter: int = 0
    steps: int = 0
    best_history: list[float] = field(default_factory=list)

    def update(self, attack_acc: float, l1: float) -> tuple[bool, str | None]:
        """Feed one step's mean attack accuracy and mask L1.

        Returns (is_new_best, stop_reason); stop_reason is "early_stop", "converged" or None.
        The caller applies `cost` to the next step.
        """
        r = self.rules
        self.steps += 1
        success = attack_acc >= r.attack_success_threshold
        improved = success and l1 < self.best_l1
        if improved:
            self.best_l1 = l1
        self.best_history.append(self.best_l1)

        if r.early_stop:
            if self.best_l1 < math.inf:
                if self.best_l1 >= r.early_stop_threshold * self.early_stop_best:
                    self.early_stop_counter += 1
                else:
                    self.early_stop_counter = 0
            self.early_stop_best = min(self.best_l1, self.early_stop_best)
            if self.up_flag and self.down_flag and self.early_stop_counter >= r.early_stop_patience:
                return improved, "early_stop"
        if self._converged():
            return improved, "converged"

        if self.cost == 0 and success:
            self.set_counter += 1
            if self.set_counter >= r.patience:
                self.cost = r.init_cost
                self.up_counter = self.down_counter = 0
                self.up_flag = self.down_flag = False
        else:
            self.set_counter = 0

        if success:
            self.up_counter += 1
            self.down_counter = 0
        else:
            self.up_counter = 0
            self.down_counter += 1
        if self.up_counter >= r.patience:
            self.up_counter = 0
            self.cost *= r.cost_up
            self.up_flag = True
        elif self.down_counter >= r.patience:
            self.down_counter = 0
            self.cost /= r.cost_down
            self.down_flag = True
        return improved, None

    def _converged(self) -> bool:
        """Shortcut: best L1 improved by less than converge_tol over the last converge_window steps."""
        w = self.rules.converge_window
        if not w or not self.up_flag or len(self.best_history) <= w or self.best_l1 == math.inf:
            return False
        before = self.best_history[-1 - w]
        return before < math.inf and self.best_l1 >= (1 - self.rules.converge_tol) * before
