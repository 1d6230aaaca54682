"""Small modal dialogs: a path prompt, a yes/no question, the help screen."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.widgets import Button, Input, Label, Static


class PathPrompt(ModalScreen[str | None]):
    """Asks for a path (with completion); Enter accepts, Escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, prompt: str, suggester: Suggester | None = None, value: str = "") -> None:
        super().__init__()
        self.prompt, self.suggester, self.value = prompt, suggester, value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.prompt)
            yield Input(self.value, suggester=self.suggester, id="path")
            yield Static("Enter: OK   Escape: cancel   →: accept completion", classes="hint")

    @on(Input.Submitted)
    def submit(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class Confirm(ModalScreen[bool]):
    """A yes/no question: y / n (or Escape)."""

    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question)  # Static wraps at word boundaries; a Label cut the resume hint
            with Horizontal(classes="dialog-buttons"):
                yield Button("Yes \\[y]", id="yes", variant="error")  # escaped: "[y]" alone is markup
                yield Button("No \\[n]", id="no")

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class HelpScreen(ModalScreen[None]):
    """Every key of the screen underneath and of the app."""

    BINDINGS = [Binding("escape,f1,question_mark,q", "close", "Close")]

    def __init__(self, rows: list[tuple[str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        width = max((len(k) for k, _ in self.rows), default=4) + 2
        lines = "\n".join(f"[b]{key:<{width}}[/]{what}" for key, what in self.rows)
        with Vertical(classes="dialog help"):
            yield Static("[b]nc-tui keys[/]  (Escape closes; ctrl+p lists the actions by name)")
            yield Static(lines)

    def action_close(self) -> None:
        self.dismiss(None)
