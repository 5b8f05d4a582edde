"""voxcap's keys, the help screen's key table and the command palette's entries, in one place.

Single letters for frequent actions (ux.md §4); every action is also in the command palette.
"""

from __future__ import annotations

from textual.binding import Binding

EXPORT_FORMATS = (
    ("txt", "Plain text"),
    ("srt", "SubRip subtitles"),
    ("vtt", "WebVTT subtitles"),
    ("json", "JSON"),
    ("md", "Markdown with timestamps"),
)
LIVE_SOURCES = (
    ("mic", "Microphone"),
    ("system", "System audio (what you hear)"),
    ("mix", "Microphone + system"),
)

BINDINGS: list[Binding | tuple[str, str] | tuple[str, str, str]] = [
    Binding("space", "pause", "Pause"),
    Binding("space", "resume", "Resume"),
    Binding("left_square_bracket,minus", "delay(-1)", "Delay−", key_display="["),
    Binding("right_square_bracket,plus,equals_sign", "delay(1)", "Delay+", key_display="]"),
    Binding("l", "pick_language", "Lang"),
    Binding("i", "pick_source", "Source"),
    Binding("d", "pick_device", "Device"),
    Binding("e", "export", "Export"),
    Binding("m", "bookmark", "Mark"),
    Binding("c", "copy_last", "Copy"),
    Binding("slash", "search", "Search", key_display="/"),
    Binding("n", "next_match(1)", "Next"),
    Binding("N", "next_match(-1)", "Prev", key_display="N"),
    Binding("end,G", "jump_live", "Live", key_display="End"),
    Binding("r", "restart", "Restart", show=False),
    Binding("t", "cycle_theme", "Theme"),
    Binding("f", "focus_mode", "Focus", show=False),
    Binding("question_mark,f1", "help", "Help", key_display="?"),
    Binding("q", "quit", "Quit"),
    Binding("ctrl+c", "quit", "Quit", show=False, priority=True),
]
KEY_HELP = (
    ("space", "pause / resume capture (the last words are flushed)"),
    ("[ ] or - +", "delay one 80 ms step down / up (applies at the next pause)"),
    ("l", "expected language (the model detects the language itself)"),
    ("i", "input source: microphone, system audio, both"),
    ("d", "input device"),
    ("e", "export the transcript (txt, srt, vtt, json, md)"),
    ("m", "bookmark this moment"),
    ("c", "copy the last finished line"),
    ("/  n  N", "search, next / previous match"),
    ("End  G", "jump back to the live end"),
    ("PgUp PgDn ↑ ↓", "scroll the transcript (leaves the live end)"),
    ("r", "restart the model stream now"),
    ("t", "next theme"),
    ("f", "focus mode: captions only"),
    ("ctrl+p", "command palette (every action)"),
    ("? F1", "this help"),
    ("q  ctrl+c", "quit (flushes and closes the journal)"),
)


# (title, help, action string) for Textual's command palette (ctrl+p)
PALETTE = (
    ("Pause / resume", "Pause or resume capture (space)", "toggle_pause"),
    ("Delay down", "One 80 ms step shorter ([)", "delay(-1)"),
    ("Delay up", "One 80 ms step longer (])", "delay(1)"),
    ("Expected language", "Set the language you expect (l)", "pick_language"),
    ("Input source", "Microphone, system audio or both (i)", "pick_source"),
    ("Input device", "Choose the input device (d)", "pick_device"),
    ("Export transcript", "Save as txt, srt, vtt, json or md (e)", "export"),
    ("Bookmark", "Mark this moment in the transcript (m)", "bookmark"),
    ("Copy last line", "Copy the last finished line (c)", "copy_last"),
    ("Search transcript", "Find text in the transcript (/)", "search"),
    ("Jump to live", "Follow the live captions again (End)", "jump_live"),
    ("Restart stream", "Restart the model stream now (r)", "restart"),
    ("Next theme", "Cycle voxcap's themes (t)", "cycle_theme"),
    ("Focus mode", "Captions only (f)", "focus_mode"),
    ("Key help", "Every key (?)", "help"),
    ("Quit voxcap", "Flush and close the journal, then quit (q)", "quit"),
)
