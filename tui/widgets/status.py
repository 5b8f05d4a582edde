"""The one-line header: app name, model (name, format, quantization, device) and a state pill."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Footer

# state -> (pill text, style). Symbols carry the meaning without colour.
STATE_PILLS = {
    "loading": ("⟳ LOADING", "bold"),
    "live": ("● LIVE", "bold"),
    "paused": ("⏸ PAUSED", "bold reverse"),
    "no-speech": ("… NO SPEECH", "italic"),
    "behind": ("⚠ BEHIND", "bold reverse"),
    "stalled": ("⚠ NO TEXT", "bold reverse"),
    "ended": ("■ END OF INPUT", "bold"),
    "error": ("✖ ERROR", "bold reverse"),
    "stopping": ("⟳ SAVING", "bold"),
}


class StatusHeader(Widget):
    DEFAULT_CSS = """
    StatusHeader { dock: top; height: 1; background: $panel; color: $foreground; padding: 0 1; }
    StatusHeader.-alert { background: $warning 40%; }
    """

    model_text: reactive[str] = reactive("no model")
    state: reactive[str] = reactive("loading")
    expected_language: reactive[str] = reactive("auto")

    def watch_state(self, state: str) -> None:
        self.set_class(state in ("behind", "stalled", "error"), "-alert")

    def render(self) -> Text:
        pill, style = STATE_PILLS.get(self.state, (self.state.upper(), "bold"))
        left = Text.assemble(("voxcap", "bold"), " · ", self.model_text, f" · lang {self.expected_language}")
        right = Text(pill, style)
        room = self.content_region.width - right.cell_len - 1
        if left.cell_len > room:  # narrow: the state pill matters more than the model's details
            left.truncate(max(0, room), overflow="ellipsis")
        space = max(1, self.content_region.width - left.cell_len - right.cell_len)
        return Text.assemble(left, " " * space, right)


class HintBar(Footer):
    """Textual's footer (keys valid now), wrapped into rows when the terminal is too narrow
    for one: labels are never cut off."""

    DEFAULT_CSS = """
    HintBar { height: auto; max-height: 4; }
    """
    def compose(self) -> ComposeResult:
        keys = list(super().compose())
        widths = [len(getattr(key, "key_display", "")) + len(getattr(key, "description", "")) + 2 for key in keys]
        available = self.app.size.width  # the widths include the command palette's key
        if widths and sum(widths) > available:
            self.styles.layout = "grid"
            palette = widths[-1]  # docked at the right of the first row
            self.styles.grid_size_columns = max(1, (available - palette) // max(widths))
            self.styles.grid_columns = "1fr"
            self.styles.height = "auto"
        else:
            self.styles.layout = "horizontal"
            self.styles.height = 1
        yield from keys

    async def on_resize(self) -> None:
        await self.recompose()
