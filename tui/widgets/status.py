"""The one-line header: app name, model (name, format, quantization, device) and a state pill."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

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
        space = max(1, self.content_region.width - left.cell_len - right.cell_len)
        return Text.assemble(left, " " * space, right)
