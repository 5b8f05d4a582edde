"""The app's plumbing, outside the App class: model loading, the audio producer, the journal,
the live caption file, exports and settings persistence.

Everything that might block runs in a Textual worker; the methods here are called on the UI
thread and return at once. Factories are injected so tests can use a fake engine and source.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tui.errors import AudioSourceError, VoxcapError
from tui.langid import LanguageDetector
from tui.messages import InterruptedSessions, JournalFailed, ModelLoaded, ModelMissing, SettingsNotSaved
from tui.pipeline import AudioBuffer
from tui.settings import AUTO_LANGUAGE, Settings, save_changes, settings_as_dict
from tui.worker import AsrWorker, NoteSource, WorkerConfig

if TYPE_CHECKING:
    from tui.app import VoxcapApp
    from tui.segments import Segment

SILENT_AFTER_S = 3.0  # this long below the silence level shows "no speech"
LEVEL_UPDATE_S = 1 / 15  # the meter repaints at most 15 times a second

ModelLoader = Callable[[], Any]
SourceFactory = Callable[[str, str | None], Any]  # (kind, device) -> tui.sources.AudioSource
JournalFactory = Callable[[Settings, Any, Callable[[str | None], None]], Any]  # -> Journal | None


def describe_model(info: Any) -> str:
    """Header text: name · format quantization · device."""
    return f"{info.name} · {info.format} {info.quant} · {info.device}"


def default_journal(settings: Settings, info: Any, on_error: Callable[[str | None], None]) -> Any:
    from tui.journal import Journal, SessionHeader

    header = SessionHeader(
        model_name=str(info.name),
        model_format=str(info.format),
        model_quant=str(info.quant),
        device=str(info.device),
        delay_ms=settings.delay_ms,
        language=None if settings.language == AUTO_LANGUAGE else settings.language,
        input_source=settings.source,
        input_device=settings.file if settings.source == "file" else settings.input_device,
        settings=settings_as_dict(settings),
    )
    return Journal(header, on_error=on_error, record_audio="wav" if settings.record_audio else None)


@dataclass
class CaptionRuntime:
    """Factories plus the live objects of one captioning session."""

    settings: Settings
    source_factory: SourceFactory
    model: Any = None  # a loaded model, or None to call model_loader in a worker
    model_loader: ModelLoader | None = None
    downloader: Callable[[], None] | None = None  # fetches the default model (first run)
    journal_factory: JournalFactory | None = default_journal
    persist_settings: bool = True
    worker_config: WorkerConfig | None = None
    detector: LanguageDetector = field(default_factory=LanguageDetector)
    # live state
    source: Any = None
    source_kind: str = ""
    device: str | None = None
    buffer: AudioBuffer | None = None
    journal: Any = None
    live_file: Any = None
    recorder: Any = None
    asr: AsrWorker | None = None
    segments: list[Segment] = field(default_factory=list)
    _switching: bool = False
    _silent_s: float = 0.0
    _levels_at: float = 0.0
    _closed: bool = False
    _saver: ThreadPoolExecutor | None = None
    _app: Any = None

    # -- model --------------------------------------------------------------------------------

    def start(self, app: VoxcapApp) -> None:
        self._app = app
        app.run_worker(self.detector.warm_up, thread=True, group="langid", exit_on_error=False)
        if self.journal_factory is not None:
            app.run_worker(lambda: self._find_interrupted(app), thread=True, group="recovery", exit_on_error=False)
        app.run_worker(lambda: self._load(app), thread=True, group="model", exit_on_error=False)

    def _find_interrupted(self, app: VoxcapApp) -> None:
        from tui.commands.sessions import find_interrupted_sessions

        summaries = find_interrupted_sessions()
        if summaries:
            app.post_message(InterruptedSessions(summaries))

    def recover(self, app: VoxcapApp, summaries: list[Any]) -> None:
        """Export each interrupted journal as Markdown beside it and mark it recovered."""

        def work() -> None:
            from tui.commands.sessions import acknowledge_interrupted
            from tui.export import export_journal

            for summary in summaries:
                written = export_journal(summary.path, "md")
                acknowledge_interrupted(summary.path)
                app.call_from_thread(app.notify, f"Recovered {summary.segments} lines to {written}", timeout=10)

        app.run_worker(work, thread=True, group="recovery", exit_on_error=False, name="recover")

    def _load(self, app: VoxcapApp) -> None:
        from asr.errors import ModelNotFound

        assert self.model is not None or self.model_loader is not None, "give a model or a model_loader"
        try:
            model = self.model if self.model is not None else self.model_loader()  # type: ignore[misc]
        except ModelNotFound as error:
            if self.downloader is None:
                raise
            question = f"{error}\n\nDownload the default model now? (it is large; this takes a while)"
            app.post_message(ModelMissing(str(error), question))
            return
        if model.needs_warm_up:  # CUDA: autotuning and compiles now, not on live audio
            model.warm_up(self.settings.delay_ms)
        # The stream (KV caches) and the journal (a file and an fsync) are made here, off the UI thread.
        session = model.stream(delay_ms=self.settings.delay_ms)
        if self.journal_factory is not None:
            self.journal = self.journal_factory(self.settings, model.info, self._journal_error(app))
        app.post_message(ModelLoaded(model, describe_model(model.info), session))

    def download_and_load(self, app: VoxcapApp) -> None:
        def fetch() -> None:
            assert self.downloader is not None
            self.downloader()
            self._load(app)

        app.notify("Downloading the default model…", timeout=10)
        app.run_worker(fetch, thread=True, group="model", exit_on_error=False, name="download")

    # -- session --------------------------------------------------------------------------------

    def begin(self, app: VoxcapApp, settings: Settings, model: Any, session: Any) -> AsrWorker:
        """Open the live file, the recording and the input; returns the worker the app runs."""
        if settings.live_file:
            from tui.livefile import LiveCaptionFile

            self.live_file = LiveCaptionFile(settings.live_file, max_lines=settings.live_file_lines)
        # The journal owns the recording (its header names the file, so a crash can be repaired).
        self.recorder = getattr(self.journal, "recorder", None)
        self.buffer = AudioBuffer(settings.queue_s)
        config = self.worker_config or WorkerConfig(
            pause_s=settings.pause_s,
            max_segment_s=settings.max_segment_s,
            watchdog_s=settings.watchdog_s,
            silence_db=settings.silence_db,
            device=str(model.info.device),
        )
        self.asr = AsrWorker(
            session,
            self.buffer,
            app.post_message,
            config,
            journal=self.journal,
            detector=self.detector,
            source_dropped_s=lambda: float(getattr(self.source, "dropped_s", 0.0)),
            on_audio=self.recorder.write if self.recorder is not None else None,
        )
        self.open_source(app, settings.source, settings.file if settings.source == "file" else settings.input_device)
        return self.asr

    def _journal_error(self, app: VoxcapApp) -> Callable[[str | None], None]:
        def report(message: str | None) -> None:
            if message:
                app.post_message(JournalFailed(message))  # thread-safe: may come from the worker

        return report

    # -- the audio producer ---------------------------------------------------------------------

    def open_source(self, app: VoxcapApp, kind: str, device: str | None) -> None:
        self.source_kind, self.device = kind, device
        try:
            self.source = self.source_factory(kind, device)
        except VoxcapError as error:
            app.notify(str(error), severity="error", timeout=30)
            app.set_source_text(f"✖ {error}")
            return
        app.run_worker(self._produce(app, self.source), group="audio", exclusive=True, exit_on_error=False)

    async def _produce(self, app: VoxcapApp, source: Any) -> None:
        assert self.buffer is not None
        try:
            await source.start()
            app.set_source_text(source.describe())
            async for chunk in source:
                if source.drops_when_full:
                    self.buffer.offer(chunk)  # full: dropped and counted, never waits
                else:
                    await self.buffer.put(chunk)  # a file or pipe loses nothing by waiting
                self._levels(app, chunk)
        except AudioSourceError as error:
            hint = "; press d or i to pick another input" if self.source_kind in ("mic", "system", "mix") else ""
            app.notify(f"{error}{hint}", title="Audio input", severity="error", timeout=30)
            app.set_source_text(f"✖ {error}")
            return
        if source is self.source and not self._switching and not app.stopping:
            self.buffer.close()  # the file or pipe ended: the worker flushes the stream
            app.input_ended()

    def _levels(self, app: VoxcapApp, chunk: Any) -> None:
        from tui.audio import rms_dbfs

        levels = dict(chunk.levels) or {chunk.source: rms_dbfs(chunk.samples)}
        duration_s = len(chunk.samples) / 16000
        loud = max(levels.values()) >= self.settings.silence_db
        self._silent_s = 0.0 if loud else self._silent_s + duration_s
        now = time.monotonic()
        if now - self._levels_at >= LEVEL_UPDATE_S:
            self._levels_at = now
            app.set_levels(levels, self._silent_s >= SILENT_AFTER_S)

    def pause_source(self) -> None:
        if self.source is not None:
            self.source.pause()

    def resume_source(self) -> None:
        if self.source is not None:
            self.source.resume()

    def stop_source(self) -> None:
        if self.source is not None:
            source, self._switching = self.source, True
            self.source.pause()  # nothing more reaches the queue while it stops
            import asyncio

            asyncio.get_running_loop().create_task(source.stop())

    def switch_source(self, app: VoxcapApp, kind: str, device: str | None) -> None:
        """Stop the current input and open another; the model stream and journal go on."""
        old = self.source
        self._switching = True

        async def swap() -> None:
            if old is not None:
                await old.stop()
            self._switching = False
            self.open_source(app, kind, device)
            if self.asr is not None:
                self.asr.send(NoteSource(f"input: {kind}" + (f" ({device})" if device else "")))

        app.run_worker(swap(), group="switch", exclusive=True, exit_on_error=False)

    def list_devices(self) -> list[tuple[str, str]]:
        """(value, label) of the inputs for the current source kind (called in a thread)."""
        try:
            if self.source_kind == "system":
                from tui.sources import list_monitor_sources

                return [(s.name, s.description or s.name) for s in list_monitor_sources()]
            from tui.sources import list_input_devices

            # Names, not indices: indices change when devices come and go, and the choice persists.
            return [
                (d.name, f"{d.name} ({d.hostapi}, {d.default_rate:.0f} Hz){' ★' if d.is_default else ''}")
                for d in list_input_devices(refresh=False)
            ]
        except VoxcapError as error:
            return [("", f"✖ {error}")]

    # -- transcript side effects ------------------------------------------------------------------

    def segment_shown(self, segment: Segment) -> None:
        self.segments.append(segment)
        if self.live_file is not None:
            self.live_file.add_final(segment.text)

    def partial_shown(self, segment: Segment | None) -> None:
        if self.live_file is not None:
            self.live_file.set_partial(segment.text if segment is not None else "")

    def export(self, app: VoxcapApp, fmt: str) -> None:
        from tui.export import export_to_file

        segments = list(self.segments)
        header = getattr(self.journal, "header", None)
        journal_path = getattr(self.journal, "path", None)
        path = Path(journal_path).with_suffix(f".{fmt}") if journal_path else Path.cwd() / f"voxcap-export.{fmt}"

        def write() -> None:
            written = export_to_file(fmt, segments, path, header=header)
            app.call_from_thread(app.notify, f"Exported {len(segments)} lines to {written}", timeout=8)

        app.run_worker(write, thread=True, group="export", exit_on_error=False, name="export")

    def persist(self, key: str, value: Any) -> None:
        """Save a changed setting to the user config, in order, off the UI thread."""
        if not self.persist_settings:
            return
        if self._saver is None:
            self._saver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="voxcap-config")
        future = self._saver.submit(save_changes, {key: value})  # one thread: writes never race
        future.add_done_callback(self._report_save)

    def _report_save(self, future: Future[Path]) -> None:
        error = future.exception()
        if error is not None and self._app is not None:
            self._app.post_message(SettingsNotSaved(str(error)))  # thread-safe, never blocks

    @property
    def closed(self) -> bool:
        return self._closed

    def wait_for_worker_exit(self, worker: AsrWorker, timeout_s: float) -> bool:
        """Block until the worker thread returned (only at shutdown, when nothing is drawn)."""
        return worker.finished.wait(timeout_s)

    def close(self, reason: str) -> None:
        """Called once the worker has flushed: close the recording, the journal (fsync'd end)."""
        if self._closed:
            return
        self._closed = True
        if self._saver is not None:
            self._saver.shutdown(wait=True)  # the last settings change is on disk before we exit
        if self.journal is not None:  # closes the recording too
            self.journal.close(reason="normal" if reason in ("quit", "end-of-input") else reason)

    @property
    def journal_path(self) -> Path | None:
        path = getattr(self.journal, "path", None)
        return Path(path) if path is not None else None
