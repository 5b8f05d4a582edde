"""The ASR worker loop, without Textual: segments, journal-before-post, controls, watchdog, drops."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from asr.tokens import STREAMING_PAD_ID, Token
from tests.fake_engine import FakeChunk, FakeSession, chunks_of, speech_like
from tui.messages import EngineStats, StreamMarked, TokensDecoded
from tui.pipeline import AudioBuffer
from tui.worker import AsrWorker, Bookmark, Pause, Restart, Resume, SetDelay, Stop, WorkerConfig


class RecordingJournal:
    def __init__(self) -> None:
        self.records: list[tuple[str, Any]] = []

    def append_segment(self, segment: Any) -> None:
        self.records.append(("segment", segment))

    def add_mark(self, kind: str, audio_s: float, **details: Any) -> None:
        self.records.append(("mark", (kind, audio_s, details)))

    @property
    def segment_texts(self) -> list[str]:
        return [s.text for kind, s in self.records if kind == "segment"]

    @property
    def mark_kinds(self) -> list[str]:
        return [m[0] for kind, m in self.records if kind == "mark"]


class Collector:
    """The worker's ``post``: checks that every finalized segment was journaled before it is posted."""

    def __init__(self, journal: RecordingJournal) -> None:
        self.journal = journal
        self.messages: list[Any] = []
        self.posted_before_journal: list[str] = []

    def __call__(self, message: Any) -> None:
        if isinstance(message, TokensDecoded):
            journaled = {id(s) for kind, s in self.journal.records if kind == "segment"}
            self.posted_before_journal += [s.text for s in message.finalized if id(s) not in journaled]
        self.messages.append(message)

    def of(self, kind: type) -> list[Any]:
        return [m for m in self.messages if isinstance(m, kind)]

    @property
    def finalized(self) -> list[str]:
        return [s.text for m in self.of(TokensDecoded) for s in m.finalized]


def make_worker(session: FakeSession | None = None, max_s: float = 60.0, **config: Any):
    journal = RecordingJournal()
    post = Collector(journal)
    buffer = AudioBuffer(max_s)
    session = session or FakeSession()
    defaults: dict[str, Any] = {"pause_s": 0.4, "stats_interval_s": 0.0, "poll_s": 0.01, "stop_at_end": True}
    worker = AsrWorker(session, buffer, post, WorkerConfig(**{**defaults, **config}), journal=journal)
    return worker, buffer, post, journal, session


def feed_all(buffer: AudioBuffer, samples: np.ndarray, chunk_s: float = 0.08) -> None:
    for chunk in chunks_of(samples, chunk_s):
        assert buffer.offer(chunk)


def talk(*parts: tuple[float, bool]) -> np.ndarray:
    return np.concatenate([speech_like(seconds, loud, seed=i) for i, (seconds, loud) in enumerate(parts)])


def test_segments_are_journaled_before_they_are_posted() -> None:
    worker, buffer, post, journal, session = make_worker()
    feed_all(buffer, talk((1.0, True), (1.0, False), (0.5, True), (1.0, False)))
    buffer.close()
    assert worker.run() == "end-of-input"
    assert post.finalized == journal.segment_texts
    assert post.finalized[:2] == ["Hello world.", "This is a test of voxcap live captions."]
    assert post.posted_before_journal == []
    segments = [s for m in post.of(TokensDecoded) for s in m.finalized]
    assert [s.index for s in segments] == list(range(len(segments)))
    assert all(s.final and s.end_s >= s.start_s for s in segments)
    assert session.calls[-1] == "reset" and "finish" in session.calls  # the input end flushes
    assert isinstance(post.messages[-1], EngineStats)


def test_delay_change_rolls_over_at_the_next_pause_and_is_marked() -> None:
    worker, buffer, post, journal, session = make_worker()
    worker.send(SetDelay(960))
    feed_all(buffer, talk((0.5, True), (1.0, False), (0.5, True), (1.0, False)))
    buffer.close()
    worker.run()
    assert "set_delay:960" in session.calls
    marks = post.of(StreamMarked)
    delay_marks = [m for m in marks if m.kind == "delay"]
    assert len(delay_marks) == 1 and delay_marks[0].delay_ms == 960 and "480 → 960" in delay_marks[0].detail
    assert "delay_change" in journal.mark_kinds
    segments = [s for m in post.of(TokensDecoded) for s in m.finalized]
    assert segments[0].delay_ms == 480 and segments[-1].delay_ms == 960
    assert post.of(EngineStats)[-1].pending_delay_ms is None and post.of(EngineStats)[-1].delay_ms == 960


def test_pause_flushes_and_keeps_the_audio_clock_continuous() -> None:
    worker, buffer, post, journal, session = make_worker(stop_at_end=False)
    thread = threading.Thread(target=worker.run)
    thread.start()
    feed_all(buffer, talk((0.64, True)))
    worker.send(Pause())
    worker.send(Resume())
    feed_all(buffer, talk((0.64, True), (1.0, False)))
    worker.send(Bookmark("here"))
    worker.send(Stop("quit"))
    thread.join(timeout=10)
    assert not thread.is_alive()
    segments = [s for m in post.of(TokensDecoded) for s in m.finalized]
    assert len(segments) >= 2
    assert segments[1].start_s >= segments[0].end_s - 1e-9  # no jump back to 0 after the reset
    assert journal.mark_kinds[:2] == ["pause", "resume"] and "bookmark" in journal.mark_kinds
    assert [m.kind for m in post.of(StreamMarked)][:2] == ["pause", "resume"]


class MuteSession(FakeSession):
    """Hears sound but never writes text: the vLLM #47614 failure the watchdog exists for."""

    def _step(self, loud: bool) -> list[Token]:
        return [Token(STREAMING_PAD_ID, "", 0.0, 0.08)]


def test_watchdog_restarts_a_stream_that_hears_sound_but_writes_nothing() -> None:
    worker, buffer, post, journal, session = make_worker(MuteSession(), watchdog_s=1.0)
    feed_all(buffer, talk((2.5, True)))
    buffer.close()
    worker.run()
    assert session.calls.count("restart") == 2  # at 1.0 s and 2.0 s of sound
    assert [m.kind for m in post.of(StreamMarked)] == ["watchdog", "watchdog"]
    assert journal.mark_kinds == ["restart", "restart"]


def test_silence_does_not_trip_the_watchdog() -> None:
    worker, buffer, post, journal, session = make_worker(MuteSession(), watchdog_s=1.0)
    feed_all(buffer, talk((3.0, False)))
    buffer.close()
    worker.run()
    assert "restart" not in session.calls


def test_manual_restart_closes_the_open_segment() -> None:
    worker, buffer, post, journal, session = make_worker(pause_s=10)
    worker.send(Restart())
    feed_all(buffer, talk((0.4, True)))
    buffer.close()
    worker.run()
    assert "restart" in session.calls and "restart" in journal.mark_kinds


def test_dropped_audio_is_counted_and_marked() -> None:
    worker, buffer, post, journal, session = make_worker(max_s=0.5)
    accepted = [buffer.offer(chunk) for chunk in chunks_of(talk((2.0, True)), 0.1)]
    assert accepted.count(True) == 5 and accepted.count(False) == 15  # 0.5 s fit; the rest is dropped
    assert abs(buffer.dropped_s - 1.5) < 1e-9
    buffer.close()
    worker.run()
    assert post.of(EngineStats)[-1].dropped_s == buffer.dropped_s
    dropped = [m for kind, m in journal.records if kind == "mark" and m[0] == "dropped_audio"]
    assert dropped and abs(dropped[0][2]["seconds"] - 1.5) < 1e-6


def test_audio_buffer_put_waits_instead_of_dropping() -> None:
    buffer = AudioBuffer(0.2)
    chunks = chunks_of(talk((1.0, True)), 0.1)

    async def produce() -> None:
        for chunk in chunks:
            await buffer.put(chunk, poll_s=0.001)
        buffer.close()

    received: list[FakeChunk] = []

    def consume() -> None:
        while not buffer.drained():
            chunk = buffer.get(timeout=0.01)
            if chunk is not None:
                received.append(chunk)  # type: ignore[arg-type]

    thread = threading.Thread(target=consume)
    thread.start()
    asyncio.run(produce())
    thread.join(timeout=10)
    assert len(received) == len(chunks) and buffer.dropped_s == 0.0
    assert buffer.queued_s == 0.0


def test_stats_messages_are_latest_wins_but_tokens_are_not() -> None:
    assert EngineStats().can_replace(EngineStats())
    message = TokensDecoded([], [], None, "mic")
    assert not message.can_replace(TokensDecoded([], [], None, "mic"))


def test_stop_flushes_the_last_words() -> None:
    worker, buffer, post, journal, session = make_worker(pause_s=10, stop_at_end=False)
    feed_all(buffer, talk((0.3, True)))
    worker.send(Stop("quit"))  # the queued 0.3 s is transcribed before the stream is flushed
    thread = threading.Thread(target=worker.run)
    thread.start()
    thread.join(timeout=10)
    assert session.calls[-1] == "finish"
    assert journal.segment_texts == post.finalized == ["Hello world.", "This"]


def test_with_the_real_engine_delay_change_and_restart(tiny_model_dir) -> None:
    """The same loop on the tiny random model: the engine's own rollover events become marks."""
    import asr
    from tests.tiny_model import synthetic_speechlike

    model = asr.load_model(tiny_model_dir, device="cpu", dtype="float32")
    journal = RecordingJournal()
    post = Collector(journal)
    buffer = AudioBuffer(60.0)
    config = WorkerConfig(pause_s=0.24, max_segment_s=1.0, stats_interval_s=0.0, poll_s=0.01, stop_at_end=True)
    worker = AsrWorker(model.stream(delay_ms=480), buffer, post, config, journal=journal)
    worker.send(SetDelay(960))
    worker.send(Restart())
    feed_all(buffer, synthetic_speechlike(6.0), chunk_s=0.1)
    buffer.close()
    assert worker.run() == "end-of-input"
    kinds = [m.kind for m in post.of(StreamMarked)]
    assert "delay" in kinds  # rolled over within 2.5 s of audio at the latest
    assert post.of(EngineStats)[-1].delay_ms == 960
    assert post.finalized == journal.segment_texts and post.posted_before_journal == []
    segments = [s for m in post.of(TokensDecoded) for s in m.finalized]
    assert all(a.end_s <= b.start_s + 0.08 for a, b in zip(segments, segments[1:], strict=False))
    assert all(s.end_s <= 6.0 + 1e-6 for s in segments)


def test_rollover_mark_comes_after_the_old_streams_last_segment() -> None:
    worker, buffer, post, journal, session = make_worker(pause_s=10)  # only the rollover closes lines
    worker.send(SetDelay(960))
    feed_all(buffer, talk((0.4, True), (0.3, False), (0.4, True)))
    buffer.close()
    worker.run()
    order = [
        ("mark", m.kind) if isinstance(m, StreamMarked) else ("final", s.text)
        for m in post.messages
        if isinstance(m, StreamMarked | TokensDecoded)
        for s in (m.finalized if isinstance(m, TokensDecoded) else [None])
    ]
    assert order[:4] == [
        ("final", "Hello world."),
        ("final", "This is a"),  # closed by the rollover at the pause...
        ("mark", "delay"),  # ...and shown before the mark
        ("final", "test of voxcap live captions."),
    ]
    kinds = [kind for kind, _ in journal.records]
    assert kinds[:4] == ["segment", "segment", "mark", "segment"]  # the journal has the same order
    assert len(journal.segment_texts) == len(set(id(s) for k, s in journal.records if k == "segment"))


def test_step_gauge_reads_the_engines_own_step_timings() -> None:
    """The gauge shows what ``voxcap bench`` reports (encoder p50 + decoder p50 per 80 ms step),
    whatever the size of the audio blocks: 20 ms blocks must not divide a step's cost by four."""
    worker, buffer, post, _, session = make_worker(FakeSession(step_sleep_s=0.004))
    feed_all(buffer, talk((2.0, True)), chunk_s=0.02)
    buffer.close()
    worker.run()
    stats = [m for m in post.of(EngineStats) if m.step_p50_ms is not None][-1]
    assert stats.step_p50_ms == pytest.approx(4.0)  # 2 ms encoder + 2 ms decoder, as the fake reports
