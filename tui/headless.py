"""Headless captioning for pipes: finalized lines (or JSONL events) on stdout, nothing else.

Same pipeline as the app (source -> AudioBuffer -> AsrWorker thread -> journal), without
Textual. Every line printed was journaled first. SIGINT, SIGTERM and SIGHUP flush the stream
and close the journal before exiting.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from tui.errors import AudioSourceError
from tui.langid import LanguageDetector
from tui.messages import EngineStats, StreamMarked, TokensDecoded
from tui.pipeline import AudioBuffer
from tui.settings import Settings
from tui.worker import AsrWorker, Stop, WorkerConfig


class HeadlessPrinter:
    """Turns worker messages into stdout lines; called on the worker thread."""

    def __init__(self, out: TextIO, fmt: str = "text") -> None:
        self.out = out
        self.fmt = fmt
        self.lines = 0
        self._last_partial: str | None = None
        self._lock = threading.Lock()
        self._stats: EngineStats | None = None  # latest, for the JSONL "stats" events
        self._stats_emitted_at = 0.0  # audio time of the last one

    STATS_EVERY_S = 5.0  # audio seconds between "stats" events in JSONL output

    def post(self, message: Any) -> None:
        with self._lock:
            if isinstance(message, TokensDecoded):
                self._tokens(message)
            elif isinstance(message, StreamMarked) and self.fmt == "jsonl":
                self._emit(
                    {
                        "type": "mark",
                        "kind": message.kind,
                        "audio_s": round(message.audio_s, 3),
                        "detail": message.detail,
                        "delay_ms": message.delay_ms,
                    }
                )
            elif isinstance(message, EngineStats):
                self._stats = message
                if message.audio_s - self._stats_emitted_at >= self.STATS_EVERY_S:
                    self._emit_stats()

    def finish(self) -> None:
        """End of output: a last "stats" event, so a pipe sees how much audio was captioned."""
        with self._lock:
            if self._stats is not None:
                self._emit_stats()

    def _emit_stats(self) -> None:
        stats = self._stats
        if stats is None or self.fmt != "jsonl":
            return
        self._stats_emitted_at = stats.audio_s
        self._emit(
            {
                "type": "stats",
                "audio_s": round(stats.audio_s, 3),
                "dropped_s": round(stats.dropped_s, 3),
                "backlog_s": round(stats.backlog_s, 3),
                "step_p50_ms": None if stats.step_p50_ms is None else round(stats.step_p50_ms, 2),
                "rtf": None if stats.rtf is None else round(stats.rtf, 3),
                "delay_ms": stats.delay_ms,
            }
        )

    def _tokens(self, message: TokensDecoded) -> None:
        for segment in message.finalized:
            self.lines += 1
            if self.fmt == "jsonl":
                self._emit(
                    {
                        "type": "final",
                        "index": segment.index,
                        "text": segment.text,
                        "start_s": round(segment.start_s, 3),
                        "end_s": round(segment.end_s, 3),
                        "language": segment.language,
                        "source": segment.source,
                        "delay_ms": segment.delay_ms,
                    }
                )
            else:
                self.out.write(segment.text + "\n")
                self.out.flush()
        if self.fmt == "jsonl":
            partial = message.open_segment.text if message.open_segment is not None else None
            if partial != self._last_partial and partial:
                self._emit({"type": "partial", "text": partial, "start_s": round(message.open_segment.start_s, 3)})  # type: ignore[union-attr]
            self._last_partial = partial

    def _emit(self, event: dict[str, Any]) -> None:
        self.out.write(json.dumps(event, ensure_ascii=False) + "\n")
        self.out.flush()


async def _produce(source: Any, buffer: AudioBuffer) -> str | None:
    """Feed the buffer until the input ends; returns an error message or None."""
    try:
        await source.start()
        async for chunk in source:
            if source.drops_when_full:
                buffer.offer(chunk)
            else:
                await buffer.put(chunk)
    except AudioSourceError as error:
        return str(error)
    finally:
        buffer.close()
    return None


async def run_headless_async(
    settings: Settings,
    model: Any,
    source: Any,
    journal: Any = None,
    out: TextIO | None = None,
    open_journal: Callable[[], Any] | None = None,
) -> int:
    """Caption ``source`` to ``out`` until it ends or a stop signal comes; returns the exit status.

    ``open_journal`` (instead of ``journal``) opens the journal only after the signal handlers are
    in place, so a signal at any moment after the journal exists still closes it, and the path
    is printed on stderr. Exit status: 0, 130 after SIGINT (the shell's Ctrl+C convention), 2 when
    the input failed.
    """
    out = out if out is not None else sys.stdout
    loop = asyncio.get_running_loop()
    stop_reason: list[str] = []
    workers: list[AsrWorker] = []

    def stop(name: str) -> None:
        if stop_reason:
            return
        stop_reason.append(name)
        for worker in workers:
            worker.send(Stop(name))
        loop.create_task(source.stop())

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            loop.add_signal_handler(signum, stop, signum.name)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread: the caller handles signals
    if open_journal is not None:
        journal = open_journal()
    error: str | None = None
    try:
        if not stop_reason:
            error = await _caption(settings, model, source, journal, out, workers, stop_reason)
    finally:
        if journal is not None:
            journal.close(reason=stop_reason[0] if stop_reason else "normal")
            if open_journal is not None:
                print(f"voxcap: transcript saved to {journal.path}", file=sys.stderr)
    if error:
        print(f"voxcap: error: {error}", file=sys.stderr)
        return 2
    return 130 if stop_reason[:1] == ["SIGINT"] else 0


async def _caption(
    settings: Settings,
    model: Any,
    source: Any,
    journal: Any,
    out: TextIO,
    workers: list[AsrWorker],
    stop_reason: list[str],
) -> str | None:
    loop = asyncio.get_running_loop()
    detector = LanguageDetector()
    await loop.run_in_executor(None, detector.warm_up)  # in a thread: signals are handled meanwhile
    if model.needs_warm_up:  # CUDA: autotuning and compiles before the audio starts
        await loop.run_in_executor(None, model.warm_up, settings.delay_ms)
    if stop_reason:
        return None
    buffer = AudioBuffer(settings.queue_s)
    config = WorkerConfig(
        pause_s=settings.pause_s,
        max_segment_s=settings.max_segment_s,
        watchdog_s=settings.watchdog_s,
        silence_db=settings.silence_db,
        device=str(model.info.device),
        stop_at_end=True,
    )
    printer = HeadlessPrinter(out, settings.output_format)
    recorder = getattr(journal, "recorder", None)  # --record: the journal owns the recording
    worker = AsrWorker(
        model.stream(delay_ms=settings.delay_ms),
        buffer,
        printer.post,
        config,
        journal=journal,
        detector=detector,
        source_dropped_s=lambda: float(getattr(source, "dropped_s", 0.0)),
        on_audio=recorder.write if recorder is not None else None,
    )
    workers.append(worker)
    asr_thread = loop.run_in_executor(None, worker.run)
    producer = asyncio.create_task(_produce(source, buffer))
    try:
        await asr_thread
    finally:
        if not producer.done():
            await source.stop()
        error = await producer
        printer.finish()
    return error
