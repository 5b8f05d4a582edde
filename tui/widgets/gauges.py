"""Gauges (step latency vs the 80 ms budget, lag, backlog, RTF, memory, drops) and the level meter.

Pure views: the app sets ``stats`` / ``levels`` from worker messages; ``render`` draws them.
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from tui.gauges import STEP_BUDGET_MS, describe_memory
from tui.messages import EngineStats

LEVEL_FLOOR_DB = -60.0  # the meter's left end
SOURCE_NAMES = {"mic": "Mic", "system": "Sys", "file": "File", "stdin": "Pipe", "mix": "Mix"}


def bar(fraction: float, width: int, fill: str = "█", empty: str = "·") -> str:
    """A bar ``width`` cells wide; eighths make the edge smooth."""
    fraction = max(0.0, min(1.0, fraction))
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[part] if part and full < width else ""
    return (fill * full + partial.strip() + empty * width)[:width]


def _ms(value: float | None) -> str:
    return "--" if value is None else f"{value:.0f}"


class GaugesPanel(Widget):
    """Latency, lag, backlog, RTF, memory, dropped audio."""

    DEFAULT_CSS = """
    GaugesPanel { height: auto; padding: 0 1; }
    GaugesPanel.-behind { color: $warning; }
    """

    stats: reactive[EngineStats | None] = reactive(None, layout=False)

    def watch_stats(self, stats: EngineStats | None) -> None:
        behind = stats is not None and stats.step_p95_ms is not None and stats.step_p95_ms > STEP_BUDGET_MS
        self.set_class(behind, "-behind")

    def render(self) -> Text:
        stats = self.stats or EngineStats()
        width = max(10, self.content_region.width)
        p95 = stats.step_p95_ms
        budget_bar = bar((p95 or 0.0) / STEP_BUDGET_MS, max(4, width - 14))
        over = p95 is not None and p95 > STEP_BUDGET_MS
        lines = [
            Text.assemble(("Step ", "bold"), f"p50 {_ms(stats.step_p50_ms)} p95 {_ms(p95)} / 80 ms"),
            Text.assemble(f"{budget_bar} ", ("OVER BUDGET" if over else "ok", "bold" if over else "dim")),
            Text.assemble(
                ("Lag ", "bold"),
                "--" if stats.lag_s is None else f"{stats.lag_s:.2f} s",
                ("  Backlog ", "bold"),
                f"{stats.backlog_s:.1f} s",
            ),
            Text.assemble(("RTF ", "bold"), "--" if stats.rtf is None else f"{stats.rtf:.2f}"),
            Text.assemble(("Mem ", "bold"), describe_memory(stats.memory)),
            Text.assemble(
                ("Dropped ", "bold"),
                (f"{stats.dropped_s:.1f} s", "bold reverse" if stats.dropped_s > 0 else ""),
            ),
        ]
        return Text("\n").join(lines)


class LevelMeter(Widget):
    """Input level per source, dBFS, from -60 (left) to 0 (right)."""

    DEFAULT_CSS = """
    LevelMeter { height: auto; padding: 0 1; }
    """

    levels: reactive[dict[str, float]] = reactive(dict, layout=True)
    silent: reactive[bool] = reactive(False)

    def render(self) -> Text:
        width = max(8, self.content_region.width - 14)
        if not self.levels:
            return Text("Input  --", "dim")
        lines = []
        for source, level in sorted(self.levels.items()):
            fraction = (level - LEVEL_FLOOR_DB) / -LEVEL_FLOOR_DB
            name = SOURCE_NAMES.get(source, source[:4].title())
            lines.append(Text.assemble((f"{name:<5}", "bold"), bar(fraction, width), f" {max(level, -99):4.0f} dB"))
        if self.silent:
            lines.append(Text("no speech (input is silent)", "italic"))
        return Text("\n").join(lines)
