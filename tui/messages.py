"""Messages from the audio producer and the ASR worker thread to the UI.

Threads post them with ``App.post_message`` (thread-safe, non-blocking). Data messages
(:class:`TokensDecoded`, :class:`StreamMarked`) are lossless and never replaced; state messages
(:class:`EngineStats`) say so in ``can_replace`` and a newer one supersedes a queued older one.
The headless mode consumes the same objects without Textual running.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message

from asr.tokens import Token
from tui.segments import Segment


@dataclass
class TokensDecoded(Message):
    """Everything one fed chunk produced: tokens, segments made final, the open segment now.

    ``finalized`` were already appended to the journal when this was posted (journal first,
    then screen), so a segment the user has seen as final is on disk.
    """

    tokens: list[Token]
    finalized: list[Segment]
    open_segment: Segment | None  # a copy; None when no segment is open
    source: str
    lag_s: float | None = None  # capture of the newest text's audio -> now (None: no text)


@dataclass
class StreamMarked(Message):
    """Something happened to the stream that belongs in the transcript (delay change, restart...)."""

    kind: str  # "delay", "restart", "watchdog", "pause", "resume", "bookmark", "source", "dropped"
    audio_s: float  # where on the audio clock
    detail: str = ""  # human text, e.g. "480 → 960 ms"
    delay_ms: int | None = None


@dataclass
class EngineStats(Message):
    """Latest gauges; a newer one replaces a queued older one."""

    step_p50_ms: float | None = None  # engine compute per 80 ms step, median of recent steps
    step_p95_ms: float | None = None
    lag_s: float | None = None  # end-to-end: audio captured -> its text handed to the UI
    backlog_s: float = 0.0  # audio waiting for the engine
    rtf: float | None = None  # compute time / audio time (below 1 keeps up)
    audio_s: float = 0.0  # audio clock (input fed so far)
    dropped_s: float = 0.0  # audio dropped because the queue was full (plus source overflows)
    delay_ms: int = 480  # delay in force in the model stream now
    pending_delay_ms: int | None = None  # requested, applied at the next pause
    speech_without_text_s: float = 0.0  # watchdog counter
    memory: dict[str, float] = field(default_factory=dict)  # see tui.gauges.memory_snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, EngineStats)


@dataclass
class WorkerFinished(Message):
    """The ASR worker flushed the stream and closed the journal; ``reason`` says why it stopped."""

    reason: str  # "quit", "end-of-input", "error"
    error: str | None = None


@dataclass
class JournalFailed(Message):
    """The journal could not be written (disk full, permissions); captions continue on screen."""

    error: str


@dataclass
class ModelLoaded(Message):
    """The engine is ready; ``info`` is the header's one-line description of it."""

    model: Any
    info: str
    session: Any = None  # the model stream, opened in the loading thread


@dataclass
class ModelMissing(Message):
    """No model to load; ``question`` offers the download, ``error`` says what to do otherwise."""

    error: str
    question: str


@dataclass
class InterruptedSessions(Message):
    """Journals of earlier sessions that never closed (crash, kill): offered for export."""

    summaries: list[Any]  # tui.commands.sessions.SessionSummary, newest first


@dataclass
class SettingsNotSaved(Message):
    """A setting changed in the app could not be written to the config file."""

    error: str
