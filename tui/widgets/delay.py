"""The delay slider: 80..2400 ms in 80 ms steps, 480 marked as default, published WER shown.

A pure view of two numbers the app owns: ``value`` (the delay asked for) and ``in_force`` (the
delay of the model stream now). They differ until the stream rolls over at the next pause.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from tui.settings import DELAY_DEFAULT_MS, DELAY_MAX_MS, DELAY_MIN_MS, DELAY_STEP_MS, next_delay

# FLEURS average WER (%) over the 13 languages by delay, from the model card (voxtral-realtime.md §9.1).
FLEURS_WER_BY_DELAY = {160: 12.60, 480: 8.72, 960: 7.70, 2400: 6.73}


def wer_note(delay_ms: int) -> str:
    """The published accuracy at (or around) ``delay_ms``; never an invented number."""
    if delay_ms in FLEURS_WER_BY_DELAY:
        return f"FLEURS WER {FLEURS_WER_BY_DELAY[delay_ms]:.2f} % (avg, 13 langs)"
    known = sorted(FLEURS_WER_BY_DELAY)
    lower = [d for d in known if d < delay_ms]
    upper = [d for d in known if d > delay_ms]
    if lower and upper:
        low, high = lower[-1], upper[0]
        return f"WER between {FLEURS_WER_BY_DELAY[high]:.2f} and {FLEURS_WER_BY_DELAY[low]:.2f} %"
    if upper:
        return f"WER above {FLEURS_WER_BY_DELAY[upper[0]]:.2f} % (published ≥ {upper[0]} ms)"
    return f"WER ≈ {FLEURS_WER_BY_DELAY[lower[-1]]:.2f} %"


class DelaySlider(Widget, can_focus=True):
    """Left/right (or the app's [ ] keys) move the requested delay by one 80 ms step."""

    BINDINGS = [
        Binding("left", "step(-1)", "Delay -80", show=False),
        Binding("right", "step(1)", "Delay +80", show=False),
    ]
    DEFAULT_CSS = """
    DelaySlider { height: 4; padding: 0 1; }
    DelaySlider:focus { background: $boost; }
    """

    value: reactive[int] = reactive(DELAY_DEFAULT_MS)
    in_force: reactive[int] = reactive(DELAY_DEFAULT_MS)

    @dataclass
    class Changed(Message):
        value: int

    def action_step(self, steps: int) -> None:
        new = next_delay(self.value, steps)
        if new != self.value:
            self.value = new
            self.post_message(self.Changed(new))

    def render(self) -> Text:
        width = max(12, self.content_region.width)
        n_values = (DELAY_MAX_MS - DELAY_MIN_MS) // DELAY_STEP_MS + 1  # 30 positions

        def cell(delay_ms: int) -> int:
            return round((delay_ms - DELAY_MIN_MS) / DELAY_STEP_MS * (width - 1) / (n_values - 1))

        knob, default = cell(self.value), cell(DELAY_DEFAULT_MS)
        title = Text.assemble(("Delay ", "bold"), f"{self.value} ms")
        if self.value == DELAY_DEFAULT_MS:
            title.append(" (default)", "dim")
        if self.value != self.in_force:
            title.append(f" ← {self.in_force} until pause", "italic")
        bar = Text()
        for position in range(width):
            if position == knob:
                bar.append("●", "bold")
            elif position < knob:
                bar.append("━")
            else:
                bar.append("─", "dim")
        ticks = [" "] * width
        ticks[default] = "▲"
        label = f"{DELAY_DEFAULT_MS}"
        start = min(default + 1, width - len(label))
        for offset, char in enumerate(label):
            if start + offset != default:
                ticks[start + offset] = char
        lines = [title, bar, Text("".join(ticks), "dim"), Text(wer_note(self.value), "dim")]
        return Text("\n").join(lines)
