"""The live screens' redraw budget (nc_tui/redraw.py): the UI thread keeps to its share of a core."""

from nc_tui.redraw import RedrawBudget


class Clocks:
    def __init__(self) -> None:
        self.wall = self.cpu = 0.0


def budget(share: float = 0.03, longest: float = 2.0) -> tuple[RedrawBudget, Clocks]:
    clocks = Clocks()
    return RedrawBudget(share, longest, wall=lambda: clocks.wall, cpu=lambda: clocks.cpu), clocks


def test_the_first_redraw_is_always_allowed():
    b, _ = budget()
    assert b.allows()


def test_a_cheap_redraw_allows_the_next_tick():
    b, clocks = budget()
    b.drawn()
    clocks.wall, clocks.cpu = 0.25, 0.005  # 5 ms of UI CPU in a 250 ms tick: 2% of a core
    assert b.allows()


def test_an_expensive_redraw_waits_until_its_cost_is_its_share_of_the_time():
    b, clocks = budget()
    b.drawn()
    clocks.cpu = 0.030  # the redraw's rendering took 30 ms of CPU: 1 s of wall at 3%
    for wall in (0.25, 0.5, 0.75, 0.99):
        clocks.wall = wall
        assert not b.allows()
    clocks.wall = 1.0
    assert b.allows()
    b.drawn()
    clocks.wall = 1.25  # charged afresh from the last redraw
    assert b.allows()


def test_the_view_is_redrawn_at_least_every_longest_seconds():
    b, clocks = budget(longest=2.0)
    b.drawn()
    clocks.wall, clocks.cpu = 1.9, 1.0  # far over budget
    assert not b.allows()
    clocks.wall = 2.0
    assert b.allows()
