"""The transcript: finalized lines plain, the open segment dim + italic behind a marker, follow-live.

A Line-API scroll view: each entry (a final segment or a mark) is wrapped once per width and
cached, so committed lines never re-wrap while the partial tail changes. Each line has a gutter
with its audio time, its source tag and its detected language (``fr!`` when it differs from the
expected language: the ``!`` keeps the flag visible without colour).
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from rich.console import Console
from rich.segment import Segment as RichSegment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tui.segments import Segment

SOURCE_TAGS = {"mic": "MIC", "system": "SYS", "file": "FILE", "stdin": "PIPE", "mix": "MIX"}
PARTIAL_MARKER = "▸ "  # the boundary between final text and the tentative tail
GUTTER_WIDTH = 19  # "00:00:00 FILE en! " + 1


def format_clock(seconds: float) -> str:
    total = max(0, int(seconds))
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


@dataclass
class Entry:
    """One transcript item: a segment (final or the partial) or a mark (delay change, bookmark...)."""

    audio_s: float
    text: str
    kind: str = "segment"  # "segment", "partial", "mark"
    source: str = ""
    language: str | None = None
    mismatch: bool = False


class CaptionsView(ScrollView, can_focus=True):
    """Scrollable transcript with a live tail. ``follow`` is True while pinned to the live end."""

    COMPONENT_CLASSES = {
        "captions--gutter",
        "captions--partial",
        "captions--mark",
        "captions--mismatch",
        "captions--match",
        "captions--current-match",
    }
    DEFAULT_CSS = """
    CaptionsView {
        background: $surface;
        color: $foreground;
        scrollbar-gutter: stable;
    }
    CaptionsView > .captions--gutter { color: $text-muted; }
    CaptionsView > .captions--partial { color: $text-muted; text-style: italic; }
    CaptionsView > .captions--mark { color: $accent; text-style: bold; }
    CaptionsView > .captions--mismatch { color: $warning; text-style: bold; }
    CaptionsView > .captions--match { background: $accent 30%; }
    CaptionsView > .captions--current-match { background: $accent; color: $background; }
    """

    follow: reactive[bool] = reactive(True)

    @dataclass
    class FollowChanged(Message):
        follow: bool

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.entries: list[Entry] = []
        self.partial: Entry | None = None
        self.query_text = ""
        self.matches: list[int] = []  # entry indices matching query_text
        self.match_cursor = -1
        self._wrapped: list[list[Strip]] = []  # per entry, at _wrap_width
        self._starts: list[int] = []  # first virtual line of each entry
        self._partial_strips: list[Strip] = []
        self._wrap_width = 0

    # -- content ------------------------------------------------------------------------------

    def add_segment(self, segment: Segment, mismatch: bool = False) -> None:
        entry = Entry(segment.start_s, segment.text, "segment", segment.source, segment.language, mismatch)
        self._append(entry)

    def add_mark(self, audio_s: float, text: str) -> None:
        self._append(Entry(audio_s, text, "mark"))

    def set_partial(self, segment: Segment | None) -> None:
        partial = None if segment is None else Entry(segment.start_s, segment.text, "partial", segment.source)
        if partial == self.partial:
            return  # padding-only updates change nothing on screen
        self.partial = partial
        self._partial_strips = self._wrap(self.partial) if self.partial and self._wrap_width else []
        self._update_size()

    def _append(self, entry: Entry) -> None:
        self.entries.append(entry)
        if self._wrap_width:
            self._starts.append(self._starts[-1] + len(self._wrapped[-1]) if self._wrapped else 0)
            self._wrapped.append(self._wrap(entry))
        if self.query_text and self._matches(entry):
            self.matches.append(len(self.entries) - 1)
        self._update_size()

    # -- following the live end -----------------------------------------------------------------

    def watch_follow(self, follow: bool) -> None:
        if follow:
            self.scroll_end(animate=False, immediate=True)
        self.post_message(self.FollowChanged(follow))

    def jump_to_live(self) -> None:
        self.follow = True
        self.scroll_end(animate=False, immediate=True)

    def _leave_live(self) -> None:
        if self.max_scroll_y > 0:
            self.follow = False

    def action_scroll_up(self) -> None:
        self._leave_live()
        super().action_scroll_up()

    def action_page_up(self) -> None:
        self._leave_live()
        super().action_page_up()

    def action_scroll_home(self) -> None:
        self._leave_live()
        super().action_scroll_home()

    def action_scroll_end(self) -> None:
        self.jump_to_live()

    def _on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self._leave_live()
        super()._on_mouse_scroll_up(event)

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if not self.follow and new >= self.max_scroll_y and old != new:
            self.follow = True  # scrolled back down to the end by hand

    # -- search -------------------------------------------------------------------------------

    def search(self, query: str) -> int:
        """Highlight ``query`` (case-insensitive); jump to the last match. Returns the match count."""
        self.query_text = query.strip()
        self.matches = [i for i, entry in enumerate(self.entries) if self._matches(entry)]
        self.match_cursor = len(self.matches) - 1
        self._rewrap(force=True)
        self._show_match()
        return len(self.matches)

    def next_match(self, step: int) -> None:
        if not self.matches:
            return
        self.match_cursor = (self.match_cursor + step) % len(self.matches)
        self._rewrap(force=True)
        self._show_match()

    @property
    def current_match(self) -> int | None:
        return self.matches[self.match_cursor] if self.matches and self.match_cursor >= 0 else None

    def _matches(self, entry: Entry) -> bool:
        return bool(self.query_text) and self.query_text.lower() in entry.text.lower()

    def _show_match(self) -> None:
        index = self.current_match
        if index is None or not self._starts:
            return
        self.follow = False
        self.scroll_to(y=max(0, self._starts[index] - self.size.height // 2), animate=False, immediate=True)

    # -- rendering ------------------------------------------------------------------------------

    def on_resize(self, event: events.Resize) -> None:
        self._rewrap()

    def notify_style_update(self) -> None:
        """Theme or CSS changed: the cached lines carry old styles, so wrap them again."""
        super().notify_style_update()
        if self._wrap_width:
            self._rewrap(force=True)

    def _content_width(self) -> int:
        return max(GUTTER_WIDTH + 8, self.scrollable_content_region.width)

    def _rewrap(self, force: bool = False) -> None:
        width = self._content_width()
        if width == self._wrap_width and not force:
            return
        self._wrap_width = width
        self._wrapped = [self._wrap(entry, i) for i, entry in enumerate(self.entries)]
        self._starts = []
        line = 0
        for strips in self._wrapped:
            self._starts.append(line)
            line += len(strips)
        self._partial_strips = self._wrap(self.partial) if self.partial else []
        self._update_size()

    def _update_size(self) -> None:
        lines = (self._starts[-1] + len(self._wrapped[-1]) if self._wrapped else 0) + len(self._partial_strips)
        self.virtual_size = Size(self._wrap_width, lines)
        if self.follow:
            self.scroll_end(animate=False, immediate=True)
        self.refresh()

    def _style(self, name: str, background: bool = False) -> Style:
        """A component class's resolved style; without its background unless asked, so the
        view's own background (and search highlights) show through."""
        full = self.get_component_rich_style(name)
        if background:
            return full
        return Style(
            color=full.color,
            bold=full.bold,
            italic=full.italic,
            dim=full.dim,
            underline=full.underline,
            reverse=full.reverse,
            strike=full.strike,
        )

    def _gutter(self, entry: Entry) -> list[RichSegment]:
        gutter = self._style("captions--gutter")
        clock = format_clock(entry.audio_s)
        tag = SOURCE_TAGS.get(entry.source, entry.source.upper()[:4])
        if entry.kind == "partial":
            language, language_style = "··", gutter
        else:
            language = (entry.language or "--") + ("!" if entry.mismatch else "")
            language_style = self._style("captions--mismatch") if entry.mismatch else gutter
        return [
            RichSegment(f"{clock} {tag:<4} ", gutter),
            RichSegment(f"{language:<3}", language_style),
            RichSegment(" " * (GUTTER_WIDTH - 17), gutter),
        ]

    def _wrap(self, entry: Entry | None, index: int = -1) -> list[Strip]:
        if entry is None:
            return []
        console: Console = self.app.console
        text_width = max(8, self._wrap_width - GUTTER_WIDTH)
        if entry.kind == "mark":
            line = Text(f"── {format_clock(entry.audio_s)} {entry.text} ")
            line.stylize(self._style("captions--mark"))
            line.truncate(self._wrap_width)
            return [Strip(list(line.render(console)))]
        if entry.kind == "partial":
            text = Text(PARTIAL_MARKER + entry.text + " …")
            text.stylize(self._style("captions--partial"))
        else:
            text = Text(entry.text)
        if self.query_text and entry.kind != "partial":
            name = "captions--current-match" if index == self.current_match else "captions--match"
            style = self._style(name, background=True)
            text.highlight_regex(re.compile(re.escape(self.query_text), re.IGNORECASE), style)
        strips = []
        for number, line in enumerate(text.wrap(console, text_width, overflow="fold")):
            gutter = self._gutter(entry) if number == 0 else [RichSegment(" " * GUTTER_WIDTH)]
            strips.append(Strip([*gutter, *line.render(console)]))
        return strips or [Strip(self._gutter(entry))]

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        line = scroll_y + y
        width = self.scrollable_content_region.width
        total_final = self._starts[-1] + len(self._wrapped[-1]) if self._wrapped else 0
        if line < total_final:
            index = bisect.bisect_right(self._starts, line) - 1
            strip = self._wrapped[index][line - self._starts[index]]
        elif line - total_final < len(self._partial_strips):
            strip = self._partial_strips[line - total_final]
        else:
            return Strip.blank(width, self.rich_style)
        # The view's own style under every segment: plain text gets the theme's colours.
        return strip.crop_extend(scroll_x, scroll_x + width, self.rich_style).apply_style(self.rich_style)

    def last_final_text(self) -> str | None:
        for entry in reversed(self.entries):
            if entry.kind == "segment":
                return entry.text
        return None
