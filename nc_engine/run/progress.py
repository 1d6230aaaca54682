"""Progress and ETA of a scan, counted in search steps, for the console and the app alike.

A running search counts the steps it has left to its step limit (the schedule's early stops have no
bound that could be counted on), a waiting one the length of the searches finished so far (its limit
before any finished), a finished one the steps it took. So the bar cannot read 99% while one label
grinds on to its limit, and the ETA is an upper bound until the searches stop early. The rate is measured
over the last RATE_WINDOW seconds: it drops when a group empties out and its last search runs alone.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from nc_engine.run.inflight import Key

RATE_WINDOW = 30.0  # seconds of recent progress the ETA's rate is measured over


@dataclass
class ScanProgress:
    jobs: int  # searches this run has to finish (those finished before a resume are not counted)
    max_steps: int
    screen_steps: int = 0  # the screening pass's step limit
    clock: Callable[[], float] = time.perf_counter
    running: dict[Key, int] = field(default_factory=dict)  # step reached
    finished: dict[Key, int] = field(default_factory=dict)  # steps taken
    baseline: int = 0  # steps a resumed run's searches had taken before it started
    stage: str = "trial"  # the stage now running (waiting searches are of this stage)
    samples: deque[tuple[float, int]] = field(default_factory=deque)  # (time, steps done) for the rate

    def __post_init__(self) -> None:
        self.samples.append((self.clock(), 0))

    def limit(self, stage: str) -> int:
        return max(1, self.screen_steps if stage == "screen" and self.screen_steps else self.max_steps)

    def step(self, key: Key, step: int) -> None:
        """A search reached `step` (its first event after a resume may be far past step 1)."""
        if key not in self.running and key not in self.finished:
            self.baseline += step - 1
        self.running[key] = step
        self.stage = key[2]

    def finish(self, key: Key, steps: int) -> None:
        self.running.pop(key, None)
        self.finished[key] = steps

    def set_jobs(self, jobs: int) -> None:
        """The screening chose its confirmations: the searches left are full-budget ones, now counted."""
        self.jobs, self.stage = jobs, "trial"

    def _typical(self) -> float:
        mine = [s for (_, _, stage), s in self.finished.items() if stage == self.stage]
        return sum(mine) / len(mine) if mine else float(self.limit(self.stage))

    def work(self) -> tuple[int, float]:
        """(steps done, steps the whole scan is expected to take)."""
        done = sum(self.finished.values()) + sum(self.running.values())
        left = sum(max(0, self.limit(stage) - s) for (_, _, stage), s in self.running.items())
        waiting = max(0, self.jobs - len(self.finished) - len(self.running))
        return done, done + left + waiting * self._typical()

    def fraction(self) -> float:
        done, total = self.work()
        if self.jobs <= len(self.finished) and not self.running:
            return 1.0
        return min(1.0, done / total) if total > 0 else 0.0

    def eta_seconds(self) -> float | None:
        """Seconds left at the recent rate; None until there is a rate to go by."""
        done, total = self.work()
        now, mine = self.clock(), done - self.baseline
        if now - self.samples[-1][0] >= 0.5 or len(self.samples) == 1:  # a few samples a second will do
            self.samples.append((now, mine))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW:
            self.samples.popleft()
        then, before = self.samples[0]
        if now - then <= 0 or mine - before <= 0:
            return None
        return (total - done) * (now - then) / (mine - before)
