"""Tokens -> caption segments: close at sentence ends and at pauses, keep the open one partial.

The realtime model does no endpointing; it emits STREAMING_PAD (id 32) for every 80 ms slot in
which nothing new was said. So a run of pads is a pause, and a pause of ``pause_s`` or more closes
the open segment. A sentence end (``.``, ``?``, ``!`` and their CJK/Arabic/Devanagari forms) closes
it too, but only once the next token shows the sentence really ended (a control token or text
that starts with a space), so "3.5" or "e.g." inside a word does not split a line. A segment that
grows past ``max_segment_s`` closes at the next word boundary, so a speaker who never pauses still
gets finalized lines.

Pure logic, no threads and no Textual: the ASR worker drives it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import replace

from asr.tokens import EOS_ID, STREAMING_PAD_ID, STREAMING_WORD_ID, Token
from tui.segments import Segment

STEP_S = 0.08  # one token slot = 80 ms of audio
SENTENCE_ENDS = frozenset(".?!…。？！؟।")
CLOSING_MARKS = frozenset("\"'”’»)]」』")  # may follow a sentence end: `"Stop!" he said`
FULL_WIDTH_ENDS = frozenset("。？！")  # scripts without spaces: the next text starts a new sentence


def ends_sentence(text: str) -> bool:
    """True when ``text`` ends with sentence-final punctuation (quotes/brackets after it allowed)."""
    stripped = text.rstrip()
    while stripped and stripped[-1] in CLOSING_MARKS:
        stripped = stripped[:-1]
    return bool(stripped) and stripped[-1] in SENTENCE_ENDS


class Segmenter:
    """Feed tokens in order with :meth:`push`; it returns the segments that became final.

    >>> seg = Segmenter(pause_s=0.24)
    >>> [s.text for s in seg.push([Token(5000, "Hi", 0.0, 0.08)], "mic")]
    []
    >>> seg.open.text
    'Hi'
    >>> [s.text for s in seg.push([Token(32, "", 0.08, 0.16)] * 3, "mic")]
    ['Hi']
    """

    def __init__(
        self,
        pause_s: float = 1.2,
        max_segment_s: float = 20.0,
        delay_ms: int = 480,
        first_index: int = 0,
        detect_language: Callable[[str], str | None] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.pause_steps = max(1, round(pause_s / STEP_S))  # pads in a row that make a pause
        self.max_segment_s = max_segment_s
        self.delay_ms = delay_ms
        self._next_index = first_index
        self._detect_language = detect_language
        self._wall_clock = wall_clock
        self._open: Segment | None = None
        self._pads_in_row = 0
        self._sentence_pending = False  # the last text ended a sentence; close unless a word continues

    @property
    def open(self) -> Segment | None:
        """The partial segment still growing (None between segments)."""
        return self._open

    def push(self, tokens: Iterable[Token], source: str) -> list[Segment]:
        """Consume tokens (every id, in order); return segments finalized by them, oldest first."""
        closed: list[Segment] = []
        for token in tokens:
            segment = self._consume(token, source)
            if segment is not None:
                closed.append(segment)
        return closed

    def close(self) -> Segment | None:
        """Finalize the open segment now (end of stream, pause, delay rollover, quit)."""
        segment = self._open
        self._open = None
        self._pads_in_row = 0
        self._sentence_pending = False
        if segment is None or not segment.text.strip():
            return None
        text = segment.text.strip()
        language = self._detect_language(text) if self._detect_language else None
        return replace(segment, text=text, final=True, wall_time=self._wall_clock(), language=language)

    def _consume(self, token: Token, source: str) -> Segment | None:
        if token.id == EOS_ID:
            return self.close()
        if token.id == STREAMING_PAD_ID:
            self._pads_in_row += 1
            if self._sentence_pending or self._pads_in_row >= self.pause_steps:
                return self.close()
            return None
        self._pads_in_row = 0
        if token.id == STREAMING_WORD_ID:
            if self._sentence_pending or self._too_long():
                return self.close()
            return None
        if token.is_control or not token.text:
            return None  # other control ids, or a byte piece that completes with a later token
        closed = None
        if self._sentence_pending and (token.text[:1].isspace() or self._full_width_end()):
            closed = self.close()
        elif self._too_long() and token.text[:1].isspace():
            closed = self.close()
        self._sentence_pending = False
        self._append(token, source)
        self._sentence_pending = ends_sentence(token.text)
        return closed

    def _full_width_end(self) -> bool:
        return self._open is not None and self._open.text.rstrip()[-1:] in FULL_WIDTH_ENDS

    def _too_long(self) -> bool:
        segment = self._open
        return segment is not None and segment.end_s - segment.start_s >= self.max_segment_s

    def _append(self, token: Token, source: str) -> None:
        if self._open is None:
            self._open = Segment(
                index=self._next_index,
                text=token.text.lstrip(),
                start_s=token.start_s,
                end_s=token.end_s,
                delay_ms=self.delay_ms,
                source=source,
                token_ids=[token.id],
            )
            self._next_index += 1
            return
        self._open.text += token.text
        self._open.end_s = max(self._open.end_s, token.end_s)
        self._open.token_ids.append(token.id)
