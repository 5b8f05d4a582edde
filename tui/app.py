"""The live captioning app: lifecycle, key actions, and message handlers -> widget state.

Threads: the audio producer runs as an async worker on this loop; the engine runs in
:class:`tui.worker.AsrWorker` on a thread worker and talks back only through messages. Nothing
here blocks: model loading, engine calls, journal writes, exports and config saves happen in
workers. The plumbing (sources, journal, live file) is in :mod:`tui.runtime`.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable
from functools import partial

from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.containers import Vertical, VerticalScroll
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Static
from textual.worker import Worker, WorkerState

from themes import load_themes
from tui.keymap import BINDINGS, EXPORT_FORMATS, KEY_HELP, LIVE_SOURCES, PALETTE
from tui.langid import is_mismatch
from tui.messages import (
    EngineStats,
    InterruptedSessions,
    JournalFailed,
    ModelLoaded,
    ModelMissing,
    SettingsNotSaved,
    StreamMarked,
    TokensDecoded,
    WorkerFinished,
)
from tui.runtime import CaptionRuntime
from tui.settings import LANGUAGES, SOURCES, Settings, config_dir
from tui.widgets.captions import CaptionsView
from tui.widgets.delay import DelaySlider
from tui.widgets.dialogs import ConfirmScreen, HelpScreen, PickerScreen, SearchScreen
from tui.widgets.gauges import GaugesPanel, LevelMeter
from tui.widgets.status import HintBar, StatusHeader
from tui.worker import AsrWorker, Bookmark, Pause, Restart, Resume, SetDelay, Stop


class VoxcapApp(App[int]):
    """``VoxcapApp(settings, runtime)``; ``runtime`` holds the engine/source/journal factories."""

    TITLE = "voxcap"
    CSS_PATH = "app.tcss"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (80, "-wide")]
    BINDINGS = BINDINGS
    KEY_HELP = KEY_HELP

    state: reactive[str] = reactive("loading")
    paused: reactive[bool] = reactive(False)
    expected_language: reactive[str] = reactive("auto")
    following: reactive[bool] = reactive(True)

    def __init__(self, settings: Settings, runtime: CaptionRuntime) -> None:
        super().__init__()
        self.settings = settings
        self.runtime = runtime
        self.set_reactive(VoxcapApp.expected_language, settings.language)
        self.asr: AsrWorker | None = None
        self.segments_shown = 0
        self.stats = EngineStats(delay_ms=settings.delay_ms)
        self.ended = False
        self.stopping = False
        self._mismatch_notified_at = -1e9
        self._theme_names: list[str] = []

    # -- layout & lifecycle ---------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="header")
        with Vertical(id="body"):
            with Vertical(id="transcript"):
                yield CaptionsView(id="captions")
                yield Static("⏸ not live — End jumps back to the live captions", id="not-live")
            with VerticalScroll(id="side"):
                yield Static("Input", classes="section-title")
                yield Static("", id="source-line")
                yield LevelMeter(id="level")
                yield Static("", id="language-line")
                yield DelaySlider(id="delay")
                yield Static("Engine", classes="section-title")
                yield GaugesPanel(id="gauges")
        yield HintBar()

    def on_mount(self) -> None:
        themes = load_themes(config_dir())
        for theme in themes.values():
            self.register_theme(theme)
        self._theme_names = list(themes)
        self.theme = self.settings.theme if self.settings.theme in themes else "dark"
        slider = self.query_one(DelaySlider)
        slider.value = slider.in_force = self.settings.delay_ms
        self._show_language()
        self.query_one(StatusHeader).expected_language = self.expected_language
        self.query_one(CaptionsView).focus()
        self._install_signal_handlers()
        self.runtime.start(self)

    def on_resize(self) -> None:
        # Every key label should fit: compact spacing when the terminal is not wide.
        self.query_one(HintBar).compact = self.size.width < 140

    def _install_signal_handlers(self) -> None:
        try:
            import asyncio

            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGHUP):
                loop.add_signal_handler(signum, lambda name=signum.name: self._quit(name))
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread (tests) or no signals (Windows): q and ctrl+c still flush

    # -- runtime callbacks (called on this thread by tui.runtime) --------------------------------

    def on_model_loaded(self, message: ModelLoaded) -> None:
        if not self.is_running:
            return  # shutting down: the widgets are gone; on_unmount closes the journal it opened
        info = message.info
        self.query_one(StatusHeader).model_text = info
        self.asr = self.runtime.begin(self, self.settings, message.model, message.session)
        self.state = "live"
        self.run_asr(self.asr)

    def on_model_missing(self, message: ModelMissing) -> None:
        if not self.is_running:
            return  # shutting down: no dialog to show
        self.state = "error"

        def answer(download: bool | None) -> None:
            if download:
                self.state = "loading"
                self.runtime.download_and_load(self)
            else:
                self.notify(message.error, severity="error", timeout=30)

        self.push_screen(ConfirmScreen(message.question), answer)

    def on_interrupted_sessions(self, message: InterruptedSessions) -> None:
        if not self.is_running:
            return  # shutting down: no dialog to show (the journals stay unrecovered, as before)
        newest = message.summaries[0]
        others = f" (and {len(message.summaries) - 1} more)" if len(message.summaries) > 1 else ""
        question = (
            f"An earlier session did not close cleanly: {newest.session_id}, {newest.segments} lines{others}.\n"
            "Its journal is complete up to its last finished line. Export it to Markdown now "
            "(beside the journal) and mark it recovered?"
        )

        def answer(export: bool | None) -> None:
            if export:
                self.runtime.recover(self, message.summaries)

        self.push_screen(ConfirmScreen(question), answer)

    @work(thread=True, exclusive=True, exit_on_error=False, group="asr", name="asr")
    def run_asr(self, asr: AsrWorker) -> None:
        reason = asr.run()
        self.post_message(WorkerFinished(reason))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one error handler for workers: show it; a failed engine stops captioning."""
        if event.state is WorkerState.ERROR and event.worker.error is not None:
            error = event.worker.error
            self.notify(f"{event.worker.name}: {error}", severity="error", timeout=30)
            if event.worker.group == "asr":
                self.post_message(WorkerFinished("error", str(error)))
            elif event.worker.group == "model":
                self.state = "error"  # no engine: the header says so, the toast says why

    def set_source_text(self, text: str) -> None:
        if not self.is_running:
            return  # shutting down: the widgets are gone (the journal has the text)
        self.query_one("#source-line", Static).update(text)

    def set_levels(self, levels: dict[str, float], silent: bool) -> None:
        if not self.is_running:
            return  # shutting down: the widgets are gone (the journal has the text)
        meter = self.query_one(LevelMeter)
        meter.levels = levels
        meter.silent = silent
        self._refresh_state()

    def input_ended(self) -> None:
        self.ended = True
        self._refresh_state()

    # -- worker messages ------------------------------------------------------------------------

    def on_tokens_decoded(self, message: TokensDecoded) -> None:
        if not self.is_running:
            return  # shutting down: the widgets are gone (the journal has the text)
        captions = self.query_one(CaptionsView)
        for segment in message.finalized:
            mismatch = is_mismatch(segment.language, self.expected_language)
            captions.add_segment(segment, mismatch)
            self.runtime.segment_shown(segment)
            self.segments_shown += 1
            if mismatch and self.stats.audio_s - self._mismatch_notified_at > 30:
                self._mismatch_notified_at = self.stats.audio_s
                self.notify(
                    f"Detected {LANGUAGES.get(segment.language or '', segment.language)}, "
                    f"expected {LANGUAGES.get(self.expected_language, self.expected_language)}",
                    severity="warning",
                )
        captions.set_partial(message.open_segment)
        self.runtime.partial_shown(message.open_segment)

    def on_stream_marked(self, message: StreamMarked) -> None:
        if not self.is_running:
            return  # shutting down: the widgets are gone (the journal has the text)
        self.query_one(CaptionsView).add_mark(message.audio_s, message.detail)
        if message.kind == "delay" and message.delay_ms is not None:
            self.query_one(DelaySlider).in_force = message.delay_ms
        if message.kind == "watchdog":
            self.notify(message.detail, severity="warning", timeout=10)

    def on_engine_stats(self, message: EngineStats) -> None:
        if not self.is_running:
            return  # shutting down: the widgets are gone (the journal has the text)
        self.stats = message
        self.query_one(GaugesPanel).stats = message
        if message.pending_delay_ms is None:
            self.query_one(DelaySlider).in_force = message.delay_ms
        self._refresh_state()

    def on_worker_finished(self, message: WorkerFinished) -> None:
        if message.reason == "error":
            self.state = "error"
        self.runtime.close(message.reason)
        if self.stopping or message.reason == "quit":
            self.exit(0 if message.reason != "error" else 1)

    def on_journal_failed(self, message: JournalFailed) -> None:
        if not self.is_running:
            return  # shutting down: the widgets are gone (the journal has the text)
        self.notify(message.error, title="Journal", severity="error", timeout=20)

    def on_settings_not_saved(self, message: SettingsNotSaved) -> None:
        self.notify(message.error, title="Settings", severity="error", timeout=15)

    @on(CaptionsView.FollowChanged)
    def _follow_changed(self, message: CaptionsView.FollowChanged) -> None:
        self.following = message.follow
        self.query_one("#not-live").set_class(not message.follow, "-visible")
        self.refresh_bindings()

    @on(DelaySlider.Changed)
    def _delay_changed(self, message: DelaySlider.Changed) -> None:
        if self.asr is not None:
            self.asr.send(SetDelay(message.value))
        self.runtime.persist("delay_ms", message.value)

    # -- state ----------------------------------------------------------------------------------

    def _refresh_state(self) -> None:
        if not self.is_running:
            return  # shutting down: the widgets are gone (the journal has the text)
        stats, meter = self.stats, self.query_one(LevelMeter)
        if self.state in ("loading", "error") or self.asr is None:
            return
        watchdog_s = self.settings.watchdog_s
        if self.stopping:
            state = "stopping"
        elif self.paused:
            state = "paused"
        elif self.ended:
            state = "ended"
        elif watchdog_s > 0 and stats.speech_without_text_s >= watchdog_s / 2:
            state = "stalled"
        elif stats.backlog_s > 2.0:
            state = "behind"
        elif meter.silent:
            state = "no-speech"
        else:
            state = "live"
        self.state = state

    def watch_state(self, state: str) -> None:
        for header in self.query(StatusHeader):  # none while shutting down (a late worker error)
            header.state = state
        self.refresh_bindings()

    def watch_paused(self, paused: bool) -> None:
        self.refresh_bindings()

    def _show_language(self) -> None:
        language = self.expected_language
        name = "auto (any)" if language == "auto" else f"{LANGUAGES[language]} ({language})"
        self.query_one("#language-line", Static).update(f"[b]Expect[/b] {name}  [dim](l to change)[/dim]")

    def watch_expected_language(self, language: str) -> None:
        if self.is_mounted:
            self._show_language()
            self.query_one(StatusHeader).expected_language = language

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Only the keys that do something now are shown in the footer."""
        running = self.asr is not None and not self.stopping
        if action == "pause":
            return running and not self.paused and not self.ended
        if action == "resume":
            return running and self.paused
        if action in ("delay", "restart", "bookmark"):
            return running and not self.ended or None
        if action == "next_match":
            return bool(self.query_one(CaptionsView).matches) if self.is_mounted else False
        if action == "jump_live":
            return not self.following
        if action in ("pick_source", "pick_device"):
            return self.settings.source in ("mic", "system", "mix") and running
        if action in ("export", "copy_last"):
            return self.segments_shown > 0 or None
        return True

    # -- actions --------------------------------------------------------------------------------

    def action_pause(self) -> None:
        if self.asr is None or self.paused:
            return
        self.paused = True
        self.runtime.pause_source()
        self.asr.send(Pause())
        self._refresh_state()

    def action_resume(self) -> None:
        if self.asr is None or not self.paused:
            return
        self.paused = False
        self.asr.send(Resume())
        self.runtime.resume_source()
        self._refresh_state()

    def action_delay(self, steps: int) -> None:
        self.query_one(DelaySlider).action_step(steps)

    def action_restart(self) -> None:
        if self.asr is not None:
            self.asr.send(Restart("manual"))

    def action_bookmark(self) -> None:
        if self.asr is not None:
            self.asr.send(Bookmark())
            self.notify("Bookmarked", timeout=2)

    def action_pick_language(self) -> None:
        choices = [("auto", "auto: no expectation (nothing flagged)")]
        choices += [(code, f"{name} ({code})") for code, name in LANGUAGES.items()]
        note = "The model detects the language by itself; this only sets what you expect, to flag lines."

        def chosen(language: str | None) -> None:
            if language is not None:
                self.expected_language = language
                self.runtime.persist("language", language)

        self.push_screen(PickerScreen("Expected language", choices, self.expected_language, note), chosen)

    def action_pick_source(self) -> None:
        def chosen(kind: str | None) -> None:
            if kind is not None and kind in SOURCES:
                self.runtime.switch_source(self, kind, self.settings.input_device)

        self.push_screen(PickerScreen("Input source", LIVE_SOURCES, self.runtime.source_kind), chosen)

    @work(thread=True, exclusive=True, group="devices", exit_on_error=False)
    def action_pick_device(self) -> None:
        choices = self.runtime.list_devices()  # may touch PortAudio: not on the UI thread
        self.call_from_thread(self._show_device_picker, choices)

    def _show_device_picker(self, choices: list[tuple[str, str]]) -> None:
        def chosen(device: str | None) -> None:
            if device is not None:
                self.runtime.switch_source(self, self.runtime.source_kind, device)
                self.runtime.persist("input_device", device)

        self.push_screen(PickerScreen("Input device", choices, self.runtime.device), chosen)

    def action_export(self) -> None:
        def chosen(fmt: str | None) -> None:
            if fmt is not None:
                self.runtime.export(self, fmt)

        self.push_screen(PickerScreen("Export the transcript", EXPORT_FORMATS, "txt"), chosen)

    def action_copy_last(self) -> None:
        text = self.query_one(CaptionsView).last_final_text()
        if text:
            self.copy_to_clipboard(text)
            self.notify(f"Copied: {text[:60]}", timeout=3)

    def action_search(self) -> None:
        def found(query: str | None) -> None:
            if query:
                count = self.query_one(CaptionsView).search(query)
                self.notify(f"{count} match{'es' if count != 1 else ''} for {query!r}", timeout=3)
                self.refresh_bindings()

        self.push_screen(SearchScreen(), found)

    def action_next_match(self, step: int) -> None:
        self.query_one(CaptionsView).next_match(step)

    def action_jump_live(self) -> None:
        self.query_one(CaptionsView).jump_to_live()

    def action_cycle_theme(self) -> None:
        names = self._theme_names or [self.theme]
        index = names.index(self.theme) if self.theme in names else -1
        self.theme = names[(index + 1) % len(names)]
        self.runtime.persist("theme", self.theme)
        self.notify(f"Theme: {self.theme}", timeout=2)

    def action_focus_mode(self) -> None:
        self.screen.toggle_class("-focus")

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.KEY_HELP))

    async def action_quit(self) -> None:
        self._quit("quit")

    def _quit(self, reason: str) -> None:
        """Flush everything: stop the input, let the worker finish the stream, close the journal."""
        if self.stopping:
            return
        self.stopping = True
        self._refresh_state()
        self.runtime.stop_source()
        if self.asr is None:
            self.runtime.close(reason)
            self.exit(0)
            return
        self.asr.send(Stop(reason))
        self.set_timer(15.0, lambda: self.exit(1))  # an engine wedged in a step must not trap the user

    def on_unmount(self) -> None:
        """However the app ends (q, an exception, a test), the engine thread must stop and the
        journal close; the thread gets a moment to flush what it holds."""
        if self.runtime.closed:
            return
        if self.asr is not None:
            self.asr.send(Stop("exit", drain_s=0.0))
            self.runtime.wait_for_worker_exit(self.asr, timeout_s=5.0)
        self.runtime.close("exit")  # also a journal opened by a load that finished during shutdown

    # -- command palette ------------------------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for title, help_text, action in PALETTE:
            yield SystemCommand(title, help_text, partial(self.run_action, action))

    def action_toggle_pause(self) -> None:
        if self.paused:
            self.action_resume()
        else:
            self.action_pause()
