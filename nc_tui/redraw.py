"""How often a live screen may redraw: a measured share of one core for the UI thread, not a guessed rate."""

from __future__ import annotations

import time
from collections.abc import Callable

UI_SHARE = 0.03  # of one core: on 2 cores the engine's threads use both, and every UI millisecond is one of theirs
LONGEST_WAIT = 2.0  # seconds: the view is redrawn at least this often, however slow a redraw is


class RedrawBudget:
    """Says whether the UI thread may redraw now: once the CPU time it used since the last redraw (that
    redraw's rendering included, which Textual does after the callback returns) is at most `share` of the
    wall time since, or once `longest` seconds have passed. A cheap view redraws on every timer tick; an
    expensive one, or a slow machine, waits longer, and the engine keeps the cores.

    Both clocks are read on the UI thread: `cpu` is that thread's own CPU time."""

    def __init__(
        self,
        share: float = UI_SHARE,
        longest: float = LONGEST_WAIT,
        wall: Callable[[], float] = time.perf_counter,
        cpu: Callable[[], float] = time.thread_time,
    ) -> None:
        self.share, self.longest = share, longest
        self.wall, self.cpu = wall, cpu
        self._at: tuple[float, float] | None = None  # (wall, cpu) at the last redraw

    def allows(self) -> bool:
        if self._at is None:
            return True
        elapsed = self.wall() - self._at[0]
        return elapsed >= self.longest or self.cpu() - self._at[1] <= self.share * elapsed

    def drawn(self) -> None:
        """Call right after redrawing: the CPU the UI spends from here on is charged to this redraw."""
        self._at = (self.wall(), self.cpu())
