"""A caption segment: the unit the screen shows as a line and the journal stores as a record."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Segment:
    """Text between two segment boundaries (a sentence end or a pause).

    Times are seconds on the session's audio clock (the 16 kHz input timeline, starting at 0 when
    the session starts; pauses of the app do not advance it). ``final`` segments never change
    again; the one open segment is partial and may still grow.
    """

    index: int  # 0-based, in order of opening; stable for the whole session
    text: str
    start_s: float
    end_s: float
    final: bool = False
    wall_time: float = 0.0  # time.time() when the segment was finalized (0 while open)
    delay_ms: int = 480  # transcription delay in force while it was transcribed
    language: str | None = None  # detected language code (ISO 639-1) of a final segment
    source: str = "mic"  # input tag: "mic", "system", "file", "stdin"
    token_ids: list[int] = field(default_factory=list)
