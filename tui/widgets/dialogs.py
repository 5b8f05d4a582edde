"""Modal screens: help, a generic picker (language, source, device, export format, theme), search.

Each returns its result through ``dismiss``; the app decides what a choice changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Markdown, OptionList, Static
from textual.widgets.option_list import Option

HELP_LANGUAGE = """\
**Language.** The model has no language setting: it detects among its 13 languages (ar de en es fr
hi it nl pt zh ja ko ru) by itself. The picker sets the language you *expect*. Each finished line
shows the language detected in its text, and a `!` flags a line whose language differs from the
expected one. Short lines are not judged (`--`).
"""

HELP_DELAY = """\
**Delay.** How far the model lags the audio before it commits text: longer is more accurate
(FLEURS average WER 12.6 % at 160 ms, 8.7 % at 480 ms, 7.7 % at 960 ms, 6.7 % at 2400 ms).
The delay is fixed inside a model stream, so a change takes effect at the next pause (within
2.5 s); it is marked in the transcript and nothing is lost or transcribed twice.
"""


class HelpScreen(ModalScreen[None]):
    """Every key, from the app's bindings, plus what the delay and language controls mean."""

    BINDINGS = [Binding("escape,q,question_mark,f1", "dismiss", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 90%; max-width: 100; height: 90%; border: round $accent;
                            background: $surface; padding: 0 1; }
    """

    def __init__(self, keys: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self.keys = keys

    def compose(self) -> ComposeResult:
        rows = "\n".join(f"| `{key}` | {description} |" for key, description in self.keys)
        table = f"| Key | Action |\n|---|---|\n{rows}\n"
        with Vertical():
            yield Markdown(f"# voxcap keys\n\n{table}\n{HELP_DELAY}\n{HELP_LANGUAGE}\nEsc closes this help.")

    def action_dismiss(self) -> None:  # type: ignore[override]
        self.dismiss(None)


class PickerScreen(ModalScreen[str | None]):
    """Pick one of ``choices`` (value, label); Enter picks, Esc cancels (None)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    PickerScreen { align: center middle; }
    PickerScreen > Vertical { width: 60; max-width: 95%; height: auto; max-height: 80%;
                              border: round $accent; background: $surface; padding: 0 1; }
    PickerScreen Static.-note { color: $text-muted; margin-bottom: 1; }
    PickerScreen OptionList { height: auto; max-height: 20; }
    """

    def __init__(
        self, title: str, choices: Iterable[tuple[str, str]], current: str | None = None, note: str = ""
    ) -> None:
        super().__init__()
        self.title_text = title
        self.choices = list(choices)
        self.current = current
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"[b]{self.title_text}[/b]")
            if self.note:
                yield Static(self.note, classes="-note", markup=False)
            yield OptionList(
                *[Option(("● " if value == self.current else "  ") + label, id=value) for value, label in self.choices]
            )

    def on_mount(self) -> None:
        option_list = self.query_one(OptionList)
        values = [value for value, _ in self.choices]
        if self.current in values:
            option_list.highlighted = values.index(self.current)
        option_list.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


class SearchScreen(ModalScreen[str | None]):
    """A one-line search box over the bottom of the screen."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    SearchScreen { align: center bottom; background: $background 0%; }
    SearchScreen > Input { width: 100%; margin: 0 0 1 0; border: tall $accent; }
    """

    def compose(self) -> ComposeResult:
        yield Input(placeholder="search the transcript (Enter: find, Esc: cancel)")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question (first run: download the default model?)."""

    BINDINGS = [Binding("y,enter", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Static { width: 70; max-width: 95%; border: round $accent; background: $surface;
                             padding: 1 2; }
    """

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        yield Static(f"{self.question}\n\n[b]y[/b] yes   [b]n[/b] no", markup=True)

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
