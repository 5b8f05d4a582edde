"""The ASR loop: audio chunks in, tokens -> segments -> journal -> messages out. One thread.

:class:`AsrWorker` is plain Python (no Textual needed to run or test it): the app runs
:meth:`AsrWorker.run` in a Textual thread worker, the headless mode in a plain thread. Between
chunks it applies control commands sent with :meth:`AsrWorker.send` (delay change, restart,
pause, bookmark, stop), so the engine session is only ever touched by this thread.

Order of effects for every fed chunk: engine -> segmenter -> journal (fsync) -> ``post``. A
segment is therefore on disk before anyone is told it is final.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from asr.tokens import Token
from tui.gauges import CaptureClock, LatencyTracker, memory_snapshot
from tui.langid import LanguageDetector
from tui.messages import EngineStats, StreamMarked, TokensDecoded
from tui.pipeline import SAMPLE_RATE, AudioBuffer, Chunk
from tui.segmenter import Segmenter
from tui.segments import Segment

log = logging.getLogger(__name__)


class SessionLike(Protocol):
    """The part of ``asr.StreamingSession`` the worker uses (see the engine contract)."""

    delay_ms: int
    audio_s: float

    def feed(self, samples: np.ndarray, sample_rate: int = ...) -> list[Token]: ...
    def finish(self) -> list[Token]: ...
    def reset(self) -> None: ...
    def set_delay(self, delay_ms: int) -> None: ...
    def restart(self) -> None: ...
    def pop_events(self) -> list[Any]: ...


class JournalLike(Protocol):
    """The part of ``tui.journal.Journal`` the worker uses."""

    def append_segment(self, segment: Segment) -> Any: ...
    def add_mark(self, kind: str, audio_s: float, **details: Any) -> Any: ...


# -- control commands (sent from the UI thread, applied between chunks) ---------------------


@dataclass(frozen=True)
class SetDelay:
    delay_ms: int


@dataclass(frozen=True)
class Restart:
    reason: str = "manual"


@dataclass(frozen=True)
class Pause:
    """Flush the stream (the last words appear) and wait; the audio clock does not advance."""


@dataclass(frozen=True)
class Resume:
    pass


@dataclass(frozen=True)
class Bookmark:
    label: str = ""


@dataclass(frozen=True)
class NoteSource:
    """The input changed (source or device switch): mark it in the transcript."""

    description: str


@dataclass(frozen=True)
class Stop:
    """Transcribe what is queued (for at most ``drain_s``), flush the stream, return from run()."""

    reason: str = "quit"
    drain_s: float = 5.0  # a slow engine with a long backlog must not keep the user waiting


Control = SetDelay | Restart | Pause | Resume | Bookmark | NoteSource | Stop


@dataclass(frozen=True)
class WorkerConfig:
    pause_s: float = 1.2  # padding run that closes a segment
    max_segment_s: float = 20.0
    watchdog_s: float = 20.0  # sound without text for this long -> restart (0 = off)
    silence_db: float = -50.0  # chunk level under which audio counts as silence
    stats_interval_s: float = 0.25  # how often EngineStats is posted (it is latest-wins anyway)
    memory_interval_s: float = 1.0  # psutil / CUDA queries are not free: sample at most this often
    poll_s: float = 0.05  # wait for audio this long before looking at controls again
    device: str = "cpu"  # for the memory gauge
    stop_at_end: bool = False  # headless: return once the input ended and was flushed


def chunk_level_db(samples: np.ndarray) -> float:
    """RMS level of ``samples`` in dBFS (-100 for silence)."""
    if samples.size == 0:
        return -100.0
    mean_square = float(np.mean(np.square(samples, dtype=np.float64)))
    return max(-100.0, 10.0 * np.log10(mean_square)) if mean_square > 0 else -100.0


@contextlib.contextmanager
def _inference_mode() -> Iterator[None]:
    """torch.inference_mode, entered inside the worker thread (the mode is thread-local)."""
    try:
        import torch
    except ImportError:
        yield
        return
    with torch.inference_mode():
        yield


class AsrWorker:
    """Runs one engine session over the chunks of an :class:`AudioBuffer`."""

    def __init__(
        self,
        session: SessionLike,
        audio: AudioBuffer,
        post: Callable[[Any], None],
        config: WorkerConfig | None = None,
        journal: JournalLike | None = None,
        detector: LanguageDetector | None = None,
        source_dropped_s: Callable[[], float] = lambda: 0.0,
        on_audio: Callable[[np.ndarray], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.session = session
        self.audio = audio
        self.post = post
        self.config = config or WorkerConfig()
        self.journal = journal
        self.detector = detector
        self.source_dropped_s = source_dropped_s
        self.on_audio = on_audio  # e.g. the session recording; called with every fed chunk
        self.clock = clock
        self._controls: queue.SimpleQueue[Control] = queue.SimpleQueue()
        self.segmenter = Segmenter(
            pause_s=self.config.pause_s,
            max_segment_s=self.config.max_segment_s,
            delay_ms=session.delay_ms,
            detect_language=detector.detect if detector is not None else None,
            wall_clock=wall_clock,
        )
        self.latency = LatencyTracker()
        self.capture_clock = CaptureClock()
        self.paused = False
        self.ended = False  # the input ended and the stream was flushed
        self.pending_delay_ms: int | None = None
        self.speech_without_text_s = 0.0
        self._clock_offset_s = 0.0  # audio before the last reset() (pause flushes reset the stream)
        self._last_lag_s: float | None = None
        self._marked_dropped_s = 0.0
        self._last_stats_at = -1e9
        self._memory: dict[str, float] = {}
        self._memory_at = -1e9
        self._source = "mic"
        self.finished = threading.Event()  # set when run() returns, however it returns
        self._watchdog_rollovers = 0  # restarts the watchdog asked for whose events are still to come
        self._wake = threading.Event()  # set by send(): lets an idle loop sleep instead of spin

    # -- called from other threads -----------------------------------------------------------

    def send(self, control: Control) -> None:
        """Queue a command; it is applied before the next chunk (thread-safe, never blocks)."""
        self._controls.put(control)
        self._wake.set()

    # -- the loop ----------------------------------------------------------------------------

    @property
    def audio_s(self) -> float:
        """The session's audio clock, continuous across pause flushes."""
        return self._clock_offset_s + self.session.audio_s

    def run(self) -> str:
        """Process audio and commands until :class:`Stop` (or the input ends, with ``stop_at_end``)."""
        try:
            with _inference_mode():
                return self._loop()
        finally:
            self.finished.set()

    def _loop(self) -> str:
        while True:
            stop = self._apply_controls()
            if stop is not None:
                self._drain(stop.drain_s)
                self._flush("stop")
                self._post_stats(force=True)
                return stop.reason
            if self.ended:  # the input is over: only commands can come, sleep until one does
                self._wake.wait(self.config.poll_s)
                self._wake.clear()
                continue
            chunk = self.audio.get(timeout=self.config.poll_s)
            if chunk is not None:
                self._process(chunk)
            elif self.audio.drained() and not self.ended:
                self._flush("end-of-input")
                self.ended = True
                self._post_stats(force=True)
                if self.config.stop_at_end:
                    return "end-of-input"
            self._mark_dropped()
            self._post_stats()

    def _drain(self, budget_s: float) -> None:
        deadline = time.monotonic() + budget_s
        while time.monotonic() < deadline:
            chunk = self.audio.get(timeout=0)
            if chunk is None:
                return
            self._process(chunk)

    def _apply_controls(self) -> Stop | None:
        while True:
            try:
                control = self._controls.get_nowait()
            except queue.Empty:
                return None
            if isinstance(control, Stop):
                return control
            self._apply(control)

    def _apply(self, control: Control) -> None:
        if isinstance(control, SetDelay):
            if control.delay_ms == self.session.delay_ms and self.pending_delay_ms is None:
                return
            self.session.set_delay(control.delay_ms)
            self.pending_delay_ms = control.delay_ms
            self._handle_events([])  # an engine may roll over at once (e.g. between segments)
        elif isinstance(control, Restart):
            self.session.restart()
            self._handle_events([])
        elif isinstance(control, Pause) and not self.paused:
            self._flush("pause")
            self.paused = True
            self._mark("pause", "paused")
        elif isinstance(control, Resume) and self.paused:
            self.paused = False
            self._mark("resume", "resumed")
        elif isinstance(control, Bookmark):
            self._mark("bookmark", control.label or "bookmark", label=control.label)
        elif isinstance(control, NoteSource):
            self._post(StreamMarked("source", self.audio_s, control.description))

    def _process(self, chunk: Chunk) -> None:
        self._source = chunk.source
        samples = np.asarray(chunk.samples, dtype=np.float32)  # [n] 16 kHz mono
        duration_s = len(samples) / SAMPLE_RATE
        if self.on_audio is not None:
            self.on_audio(samples)
        started = time.perf_counter()
        tokens = self.session.feed(samples, sample_rate=SAMPLE_RATE)
        self.latency.add(time.perf_counter() - started, duration_s)
        self._take_step_timings()
        self.capture_clock.add(self.audio_s, chunk.t_capture)
        tokens = self._shift(tokens)
        self._watchdog(samples, duration_s, tokens)
        self._handle_events(tokens)

    def _take_step_timings(self) -> None:
        """Move the engine's per-step timings into the gauge (this worker is their only reader)."""
        stats = self.session.stats
        self.latency.add_steps(stats.encoder_ms, stats.decoder_ms)
        stats.encoder_ms.clear()
        stats.decoder_ms.clear()

    def _shift(self, tokens: list[Token]) -> list[Token]:
        if not self._clock_offset_s:
            return tokens
        offset = self._clock_offset_s
        return [Token(t.id, t.text, t.start_s + offset, t.end_s + offset) for t in tokens]

    def _handle_events(self, tokens: list[Token]) -> None:
        """Segment ``tokens``, split at stream rollovers: the old stream's last segment closes and
        is posted before the rollover's mark, so the screen and the journal keep their order."""
        remaining = tokens
        for event in self.session.pop_events():
            event_audio_s = float(getattr(event, "audio_s", self.audio_s)) + self._clock_offset_s
            before = [t for t in remaining if t.end_s <= event_audio_s + 1e-9]
            remaining = [t for t in remaining if t.end_s > event_audio_s + 1e-9]
            closed = self.segmenter.push(before, self._source)
            last = self.segmenter.close()
            closed += [last] if last is not None else []
            self._journal_segments(closed)
            if before or closed:
                self._post(TokensDecoded(before, closed, None, self._source, self._lag(before)))
            self._rollover(event, event_audio_s)
        finalized = self.segmenter.push(remaining, self._source)
        self._journal_segments(finalized)
        if remaining or finalized:
            self._post(TokensDecoded(remaining, finalized, self._open_copy(), self._source, self._lag(remaining)))

    def _rollover(self, event: Any, audio_s: float) -> None:
        new_delay = int(getattr(event, "delay_ms", self.session.delay_ms))
        old_delay = self.segmenter.delay_ms
        self.segmenter.delay_ms = new_delay
        reason = str(getattr(event, "reason", ""))
        if new_delay != old_delay or "delay" in reason:
            self.pending_delay_ms = None
            detail = f"delay {old_delay} → {new_delay} ms"
            self._journal_mark("delay_change", audio_s, from_ms=old_delay, to_ms=new_delay)
            self._post(StreamMarked("delay", audio_s, detail, new_delay))
        elif reason == "restart" and self._watchdog_rollovers > 0:
            self._watchdog_rollovers -= 1  # already marked when the watchdog fired
        else:
            kind = "watchdog" if "watchdog" in reason else "restart"
            self._journal_mark("restart", audio_s, reason=reason or "manual")
            self._post(StreamMarked(kind, audio_s, f"stream restarted ({reason or 'manual'})", new_delay))

    def _journal_segments(self, segments: list[Segment]) -> None:
        if self.journal is None:
            return
        for segment in segments:
            self.journal.append_segment(segment)

    def _journal_mark(self, kind: str, audio_s: float, **details: Any) -> None:
        if self.journal is not None:
            self.journal.add_mark(kind, audio_s, **details)

    def _mark(self, kind: str, detail: str, **details: Any) -> None:
        self._journal_mark(kind, self.audio_s, **details)
        self._post(StreamMarked(kind, self.audio_s, detail, self.session.delay_ms))

    def _flush(self, why: str) -> None:
        """finish() the model stream so the last words come out, close the segment, reset."""
        before_s = self.audio_s
        tokens = self._shift(self.session.finish())
        self._handle_events(tokens)
        closed = self.segmenter.close()
        if closed is not None:
            self._journal_segments([closed])
            self._post(TokensDecoded([], [closed], None, self._source, None))
        if why != "stop":
            self._clock_offset_s = before_s
            self.session.reset()
        log.debug("stream flushed (%s) at %.2f s", why, before_s)

    def _watchdog(self, samples: np.ndarray, duration_s: float, tokens: list[Token]) -> None:
        if any(not t.is_control and t.text for t in tokens):
            self.speech_without_text_s = 0.0
            return
        if chunk_level_db(samples) > self.config.silence_db:
            self.speech_without_text_s += duration_s
        watchdog_s = self.config.watchdog_s
        if watchdog_s > 0 and self.speech_without_text_s >= watchdog_s:
            self.speech_without_text_s = 0.0
            closed = self.segmenter.close()
            if closed is not None:
                self._journal_segments([closed])
                self._post(TokensDecoded([], [closed], None, self._source, None))
            self.session.restart()
            self._watchdog_rollovers += 1  # its rollover event is reported here, not as a plain restart
            detail = f"no text for {watchdog_s:.0f} s of sound: stream restarted"
            self._journal_mark("restart", self.audio_s, reason="watchdog")
            self._post(StreamMarked("watchdog", self.audio_s, detail, self.session.delay_ms))

    def _mark_dropped(self) -> None:
        dropped = self.audio.dropped_s + self.source_dropped_s()
        if dropped - self._marked_dropped_s >= 0.08:  # one token of audio or more
            lost = dropped - self._marked_dropped_s
            self._marked_dropped_s = dropped
            self._journal_mark("dropped_audio", self.audio_s, seconds=round(lost, 3))

    def _lag(self, tokens: list[Token]) -> float | None:
        text_tokens = [t for t in tokens if not t.is_control and t.text]
        if not text_tokens:
            return None
        captured = self.capture_clock.capture_time(text_tokens[-1].end_s - self._clock_offset_s)
        if captured is None:
            return None
        self._last_lag_s = max(0.0, self.clock() - captured)
        return self._last_lag_s

    def _open_copy(self) -> Segment | None:
        segment = self.segmenter.open
        if segment is None:
            return None
        return Segment(**{**{f: getattr(segment, f) for f in segment.__slots__}, "token_ids": []})

    def _post(self, message: Any) -> None:
        self.post(message)

    def _post_stats(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._last_stats_at < self.config.stats_interval_s:
            return
        self._last_stats_at = now
        if now - self._memory_at >= self.config.memory_interval_s:
            self._memory = memory_snapshot(self.config.device)
            self._memory_at = now
        self.post(
            EngineStats(
                step_p50_ms=self.latency.p50_ms,
                step_p95_ms=self.latency.p95_ms,
                lag_s=self._last_lag_s,
                backlog_s=self.audio.queued_s,
                rtf=self.latency.rtf,
                audio_s=self.audio_s,
                dropped_s=self.audio.dropped_s + self.source_dropped_s(),
                delay_ms=self.session.delay_ms,
                pending_delay_ms=self.pending_delay_ms,
                speech_without_text_s=self.speech_without_text_s,
                memory=dict(self._memory),
            )
        )
