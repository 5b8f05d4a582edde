"""Pilot tests: every control of the app, with a fake engine and a fake input."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import srt
import yaml
from textual.command import CommandList, CommandPalette
from textual.events import MouseScrollUp
from textual.pilot import Pilot
from textual.widgets import Input, OptionList

from tests.fake_engine import FakeModel, FakeSource, speech_like
from tui.app import VoxcapApp
from tui.journal import read_journal
from tui.runtime import CaptionRuntime, default_journal
from tui.settings import CONFIG_DIR_ENV, Settings
from tui.widgets.captions import CaptionsView
from tui.widgets.delay import DelaySlider
from tui.widgets.dialogs import HelpScreen, PickerScreen
from tui.widgets.status import StatusHeader


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path / "config"))
    monkeypatch.setenv("VOXCAP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("NO_COLOR", raising=False)
    return tmp_path


def conversation(repeats: int = 2) -> np.ndarray:
    parts = []
    for i in range(repeats):
        parts += [speech_like(1.0, seed=i), speech_like(1.6, loud=False)]
    return np.concatenate(parts)


class Harness:
    """An app wired to a fake engine; ``sources`` records every input the app opened."""

    def __init__(
        self,
        audio: np.ndarray,
        live: bool = False,
        model: FakeModel | None = None,
        journal: bool = True,
        interval_s: float = 0.01,
        held: bool = False,
        **settings: Any,
    ) -> None:
        kind = "mic" if live else "file"
        self.settings = Settings(source=kind, file=None if live else "talk.wav", **settings)
        self.model = model or FakeModel()
        self.sources: list[tuple[str, str | None, FakeSource]] = []
        self.audio = audio
        self.live = live

        def factory(kind: str, device: str | None) -> FakeSource:
            source = FakeSource(self.audio, interval_s=0.01 if self.live else 0.0, live=self.live, source=kind)
            source.held = held
            self.sources.append((kind, device, source))
            return source

        self.runtime = CaptionRuntime(
            settings=self.settings,
            source_factory=factory,
            model=self.model,
            journal_factory=default_journal if journal else None,
        )
        self.runtime.detector.warm_up()
        self.app = VoxcapApp(self.settings, self.runtime)

    @property
    def session(self) -> Any:
        return self.model.sessions[-1]

    @property
    def captions(self) -> CaptionsView:
        return self.app.query_one(CaptionsView)


async def wait_for(pilot: Pilot, condition: Callable[[], bool], what: str, limit: int = 500) -> None:
    for _ in range(limit):
        if condition():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def input_done(pilot: Pilot, app: VoxcapApp) -> None:
    """The input ended, the worker flushed the stream, and the app handled every message it posted.

    ``app.state == "ended"`` only says the producer reached the end of the input: the worker may
    still be transcribing what is queued and flushing the stream (the last line)."""
    await wait_for(pilot, lambda: app.ended and app.asr is not None and app.asr.ended, "end of input")
    # The worker posts from its thread (call_soon_threadsafe) before it sets ``ended``; a callback
    # scheduled now runs after those deliveries, and the app handles its queue in order.
    handled = asyncio.Event()
    asyncio.get_running_loop().call_soon(app.call_later, handled.set)
    await wait_for(pilot, handled.is_set, "the worker's messages handled")


async def pick(pilot: Pilot, app: VoxcapApp, key: str, downs: int, choice: str) -> None:
    """Open a picker with ``key``, move ``downs`` rows to ``choice`` and take it; every step waits
    until the app handled it (a loaded machine can return from ``press`` before the key is done)."""
    await pilot.press(key)
    is_open = lambda: isinstance(app.screen, PickerScreen) and isinstance(app.focused, OptionList)  # noqa: E731
    await wait_for(pilot, is_open, f"the picker of {key!r}")
    picker, options = app.screen, app.screen.query_one(OptionList)
    for _ in range(downs):
        await pilot.press("down")

    def highlighted() -> str | None:
        return None if options.highlighted is None else options.get_option_at_index(options.highlighted).id

    await wait_for(pilot, lambda: highlighted() == choice, f"{choice!r} highlighted")
    await pilot.press("enter")
    await wait_for(pilot, lambda: app.screen is not picker, "the picker closed")


def saved_config(tmp_path: Path) -> dict[str, Any]:
    return yaml.safe_load((tmp_path / "config" / "config.yaml").read_text())


async def test_file_is_captioned_journaled_and_quit_flushes(isolated_dirs: Path) -> None:
    harness = Harness(conversation())
    app = harness.app
    async with app.run_test(size=(110, 32)) as pilot:
        await input_done(pilot, app)
        await wait_for(pilot, lambda: app.state == "ended", "ended state")
        texts = [e.text for e in harness.captions.entries if e.kind == "segment"]
        assert texts[:2] == ["Hello world.", "This is a test of voxcap live captions."]
        assert app.query_one(StatusHeader).state == "ended"
        assert "fake-voxtral" in app.query_one(StatusHeader).model_text
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, "exit")
    contents = read_journal(harness.runtime.journal_path)
    assert [s.text for s in contents.segments] == texts  # everything shown is on disk, once
    assert contents.ended_cleanly
    assert app.return_value == 0


async def test_a_cuda_model_warms_up_while_the_app_says_loading(isolated_dirs: Path) -> None:
    """Autotuning and compiles (CUDA) run in the loading thread before the stream opens, so the
    first live audio does not wait on them; captions follow as usual."""
    model = FakeModel(needs_warm_up=True)
    harness = Harness(conversation(), model=model, delay_ms=720)
    app = harness.app
    async with app.run_test(size=(110, 32)) as pilot:
        await input_done(pilot, app)
        assert model.calls[:2] == [("warm_up", 720), ("stream", 720)]
        texts = [e.text for e in harness.captions.entries if e.kind == "segment"]
        assert texts[:1] == ["Hello world."]
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, "exit")


async def test_pause_and_resume(isolated_dirs: Path) -> None:
    harness = Harness(conversation(), live=True)
    app = harness.app
    async with app.run_test(size=(110, 32)) as pilot:
        await wait_for(pilot, lambda: app.asr is not None and harness.sources, "pipeline")
        source = harness.sources[-1][2]
        assert app.check_action("pause", ()) and not app.check_action("resume", ())
        await pilot.press("space")
        await wait_for(pilot, lambda: app.paused and source.paused and app.state == "paused", "paused")
        assert app.check_action("resume", ()) and not app.check_action("pause", ())
        await wait_for(pilot, lambda: app.asr.paused, "worker paused")
        await pilot.press("space")
        await wait_for(pilot, lambda: not app.paused and not source.paused, "resumed")
        await wait_for(pilot, lambda: not app.asr.paused, "worker resumed")
        kinds = [e.text for e in harness.captions.entries if e.kind == "mark"]
        await wait_for(pilot, lambda: len([e for e in harness.captions.entries if e.kind == "mark"]) >= 2, "marks")
        kinds = [e.text for e in harness.captions.entries if e.kind == "mark"]
        assert kinds[:2] == ["paused", "resumed"]
        assert harness.session.calls.count("finish") >= 1  # pausing flushes the last words


async def test_delay_keys_change_the_stream_and_persist(isolated_dirs: Path) -> None:
    harness = Harness(conversation(3), live=True)
    app = harness.app
    async with app.run_test(size=(110, 32)) as pilot:
        await wait_for(pilot, lambda: app.asr is not None, "pipeline")
        slider = app.query_one(DelaySlider)
        for key, value in [
            ("right_square_bracket", 560),
            ("right_square_bracket", 640),
            ("plus", 720),
            ("minus", 640),
            ("left_square_bracket", 560),
        ]:
            await pilot.press(key)
            await wait_for(pilot, lambda value=value: slider.value == value, f"{key} -> {value} ms")
        await wait_for(pilot, lambda: "set_delay:560" in harness.session.calls, "set_delay")
        await wait_for(pilot, lambda: slider.in_force == 560, "rollover at a pause")
        marks = [e.text for e in harness.captions.entries if e.kind == "mark"]
        assert any("480 → " in m for m in marks)
        for _ in range(40):
            await pilot.press("left_square_bracket")
        await wait_for(pilot, lambda: slider.value == 80, "the minimum")  # clamped there: never below
        assert slider.value == 80
    assert saved_config(isolated_dirs)["delay_ms"] == 80


async def test_language_picker_sets_expected_language_and_flags(isolated_dirs: Path) -> None:
    harness = Harness(conversation(2), live=True, held=True)
    app = harness.app
    async with app.run_test(size=(110, 32)) as pilot:
        await pick(pilot, app, "l", 5, "fr")  # auto, ar, de, en, es, fr
        await wait_for(pilot, lambda: app.expected_language == "fr", "the expected language")
        assert app.query_one(StatusHeader).expected_language == "fr"
        await wait_for(pilot, lambda: bool(harness.sources), "input")
        harness.sources[-1][2].held = False

        def flagged() -> list[Any]:
            return [e for e in harness.captions.entries if e.kind == "segment" and e.mismatch]

        await wait_for(pilot, lambda: bool(flagged()), "a flagged line")
        assert all(e.language == "en" for e in flagged())  # English heard, French expected
        assert "en!" in "\n".join(harness.captions.render_line(y).text for y in range(20))
    assert saved_config(isolated_dirs)["language"] == "fr"


async def test_theme_cycles_and_persists(isolated_dirs: Path) -> None:
    harness = Harness(conversation(1))
    app = harness.app
    async with app.run_test(size=(110, 32)) as pilot:
        assert app.theme == "dark"
        await pilot.press("t")
        await wait_for(pilot, lambda: app.theme == "high-contrast", "the next theme")
        await pilot.press("t")
        await wait_for(pilot, lambda: app.theme == "light", "the theme after that")
    assert saved_config(isolated_dirs)["theme"] == "light"


class DeviceRuntime(CaptionRuntime):
    def list_devices(self) -> list[tuple[str, str]]:
        return [("0", "Built-in mic"), ("2", "USB headset")]


async def test_source_and_device_switch(isolated_dirs: Path) -> None:
    harness = Harness(conversation(), live=True)
    harness.runtime.__class__ = DeviceRuntime
    app = harness.app
    async with app.run_test(size=(110, 32)) as pilot:
        await wait_for(pilot, lambda: len(harness.sources) == 1, "first input")
        await pick(pilot, app, "i", 1, "system")  # mic -> system
        await wait_for(pilot, lambda: len(harness.sources) == 2, "switched input")
        assert harness.sources[0][2].stopped and harness.sources[1][0] == "system"
        await pick(pilot, app, "d", 1, "2")
        await wait_for(pilot, lambda: len(harness.sources) == 3, "device switch")
        assert harness.sources[2][:2] == ("system", "2")
        await wait_for(pilot, lambda: any("input:" in e.text for e in harness.captions.entries), "source mark")
    assert saved_config(isolated_dirs)["input_device"] == "2"


async def test_export_bookmark_copy_restart(isolated_dirs: Path) -> None:
    harness = Harness(conversation(2), live=True)
    app = harness.app
    async with app.run_test(size=(110, 32)) as pilot:
        await wait_for(pilot, lambda: app.segments_shown >= 2, "two lines")
        await pilot.press("m")
        await wait_for(pilot, lambda: any(e.text == "bookmark" for e in harness.captions.entries), "bookmark mark")
        # Live lines keep coming: note what was shown at the moment of the copy.
        shown_when_copied: list[list[str]] = []
        copy_to_clipboard = app.copy_to_clipboard

        def copy(text: str) -> None:
            shown_when_copied.append([e.text for e in harness.captions.entries if e.kind == "segment"])
            copy_to_clipboard(text)

        app.copy_to_clipboard = copy  # type: ignore[method-assign]
        await pilot.press("c")
        await wait_for(pilot, lambda: bool(shown_when_copied), "the copy")
        assert app.clipboard == shown_when_copied[0][-1]  # the last line at the moment c was handled
        await pilot.press("r")
        await wait_for(pilot, lambda: "restart" in harness.session.calls, "restart")
        await pick(pilot, app, "e", 1, "srt")  # txt -> srt
        export = harness.runtime.journal_path.with_suffix(".srt")
        await wait_for(pilot, export.exists, "export file")
        cues = list(srt.parse(export.read_text()))
        assert [c.content.replace("\n", " ") for c in cues][:1] == ["Hello world."]
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, "exit")
    contents = read_journal(harness.runtime.journal_path)
    assert "bookmark" in [m.kind for m in contents.marks] and "restart" in [m.kind for m in contents.marks]


async def test_search_scroll_back_and_jump_to_live(isolated_dirs: Path) -> None:
    harness = Harness(conversation(8))
    app = harness.app
    async with app.run_test(size=(90, 16)) as pilot:
        await input_done(pilot, app)
        await wait_for(pilot, lambda: app.state == "ended", "ended state")
        captions = harness.captions
        assert captions.follow and captions.max_scroll_y > 0
        await pilot.press("pageup")
        left = lambda: not captions.follow and not app.following and app.query_one("#not-live").has_class("-visible")  # noqa: E731
        await wait_for(pilot, left, "leaving the live end")
        assert app.check_action("jump_live", ())
        await pilot.press("end")
        await wait_for(pilot, lambda: captions.follow and captions.scroll_y == captions.max_scroll_y, "the live end")
        await pilot.press("slash")
        await wait_for(pilot, lambda: isinstance(app.focused, Input), "the search box")
        await pilot.press(*"world", "enter")
        await wait_for(pilot, lambda: bool(captions.matches), "the search")
        assert len(captions.matches) >= 4 and captions.current_match == captions.matches[-1]
        assert not captions.follow
        await pilot.press("n")
        await wait_for(pilot, lambda: captions.current_match == captions.matches[0], "the next match (wraps)")
        await pilot.press("N")
        await wait_for(pilot, lambda: captions.current_match == captions.matches[-1], "the previous match")
        await pilot.press("G")
        await wait_for(pilot, lambda: captions.follow, "following again")


async def test_help_focus_mode_and_palette(isolated_dirs: Path) -> None:
    harness = Harness(conversation(1), live=True)
    app = harness.app
    async with app.run_test(size=(110, 32)) as pilot:
        await wait_for(pilot, lambda: app.asr is not None, "pipeline")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen), "the help screen closed")
        await pilot.press("f")
        await wait_for(pilot, lambda: app.screen.has_class("-focus"), "focus mode")
        await pilot.press("f")
        await wait_for(pilot, lambda: not app.screen.has_class("-focus"), "focus mode off")
        titles = [command.title for command in app.get_system_commands(app.screen)]
        for title in (
            "Pause / resume",
            "Delay up",
            "Expected language",
            "Input device",
            "Export transcript",
            "Bookmark",
            "Next theme",
            "Quit voxcap",
        ):
            assert title in titles
        await pilot.press("ctrl+p")
        await wait_for(
            pilot, lambda: isinstance(app.screen, CommandPalette) and isinstance(app.focused, Input), "palette"
        )
        await pilot.press(*"Bookmark")

        def found() -> bool:  # the search runs in the background: the list fills when it is done
            commands = app.screen.query(CommandList)
            return (
                bool(commands)
                and commands.first().option_count == 1
                and "Bookmark" in str(commands.first().get_option_at_index(0).prompt)
            )

        await wait_for(pilot, found, "the Bookmark command found")
        await pilot.press("enter")
        await wait_for(pilot, lambda: any(e.text == "bookmark" for e in harness.captions.entries), "palette bookmark")


async def test_language_of_each_line_is_shown_in_its_gutter(isolated_dirs: Path) -> None:
    harness = Harness(conversation(1), journal=False)
    app = harness.app
    async with app.run_test(size=(110, 32)) as pilot:
        await input_done(pilot, app)
        await wait_for(pilot, lambda: app.state == "ended", "ended state")
        entries = [e for e in harness.captions.entries if e.kind == "segment"]
        assert entries[1].language == "en" and entries[1].source == "mic" or entries[1].source == "file"
        line = harness.captions.render_line(1).text
        assert line.startswith("00:00:00 FILE en ") and "This is a test" in line


async def test_interrupted_session_is_offered_for_export(isolated_dirs: Path) -> None:
    from tui.journal import Journal, SessionHeader
    from tui.segments import Segment

    crashed = Journal(SessionHeader(model_name="tiny"))
    crashed.append_segment(Segment(0, "Saved before the crash.", 0.0, 1.0, final=True))
    crashed._release_fd()  # the process "died": no end record
    harness = Harness(conversation(1), held=True)
    app = harness.app
    async with app.run_test(size=(110, 32)) as pilot:
        from tui.widgets.dialogs import ConfirmScreen

        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the recovery offer")
        await pilot.press("y")
        export = crashed.path.with_suffix(".md")
        # The export is written first, then the journal is marked recovered, then the app says so.
        recovered = lambda: any("Recovered" in str(n.message) for n in app._notifications)  # noqa: E731
        await wait_for(pilot, recovered, "the recovery notice")
        assert "Saved before the crash." in export.read_text()
    assert read_journal(crashed.path).recovered


async def test_user_theme_from_the_config_dir(isolated_dirs: Path) -> None:
    themes = isolated_dirs / "config" / "themes"
    themes.mkdir(parents=True)
    (themes / "solar.yaml").write_text("name: solar\nprimary: '#B58900'\nbackground: '#002B36'\ndark: true\n")
    harness = Harness(conversation(1), theme="solar")
    app = harness.app
    async with app.run_test(size=(110, 32)) as pilot:
        assert app.theme == "solar"
        await pilot.press("t")
        await wait_for(pilot, lambda: app.theme != "solar", "the next theme")
        assert app.theme == "dark"  # solar sorts last: cycling wraps around


async def test_no_color_is_honoured(isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    harness = Harness(conversation(1))
    async with harness.app.run_test(size=(110, 32)):
        assert harness.app.no_color  # Textual renders monochrome; partial text stays italic + marked


async def test_silent_input_shows_no_speech(isolated_dirs: Path) -> None:
    harness = Harness(np.zeros(16000 * 4, dtype=np.float32), live=True, interval_s=0.0, journal=False)
    app = harness.app
    async with app.run_test(size=(110, 32)) as pilot:
        await wait_for(pilot, lambda: app.state == "no-speech", "the no-speech state")
        assert app.query_one(StatusHeader).state == "no-speech"
        assert "no speech" in str(app.query_one("LevelMeter").render())


async def test_a_model_that_fails_to_load_is_reported(isolated_dirs: Path) -> None:
    from asr.errors import WeightsError

    harness = Harness(conversation(1))
    harness.runtime.model = None

    def broken() -> None:
        raise WeightsError("model.safetensors: truncated file; download it again")

    harness.runtime.model_loader = broken
    app = harness.app
    async with app.run_test(size=(110, 32)) as pilot:
        await wait_for(pilot, lambda: app.state == "error", "the error state")
        assert app.query_one(StatusHeader).state == "error"
        assert any("truncated file" in str(n.message) for n in app._notifications)


async def test_recording_and_live_file(isolated_dirs: Path) -> None:
    import soundfile as sf

    live = isolated_dirs / "live.txt"
    audio = conversation(1)
    harness = Harness(audio, record_audio=True, live_file=str(live), live_file_lines=2)
    app = harness.app
    async with app.run_test(size=(110, 32)) as pilot:
        await input_done(pilot, app)
        await wait_for(pilot, lambda: app.state == "ended", "ended state")
        finals = [e.text for e in harness.captions.entries if e.kind == "segment"]
        assert finals
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, "exit")
    recording = harness.runtime.journal_path.with_suffix(".wav")
    samples, rate = sf.read(recording, dtype="float32")
    assert rate == 16000 and len(samples) == len(audio)  # every fed sample, once
    # Quitting may finalize one more line (the open one is flushed): compare with the journal.
    journaled = [s.text for s in read_journal(harness.runtime.journal_path).segments]
    assert journaled[: len(finals)] == finals
    assert live.read_text().splitlines()[-2:] == journaled[-2:]


async def test_mouse_wheel_scrolls_back_and_leaves_live(isolated_dirs: Path) -> None:
    harness = Harness(conversation(8))
    app = harness.app
    async with app.run_test(size=(90, 16)) as pilot:
        await input_done(pilot, app)
        await wait_for(pilot, lambda: app.state == "ended", "ended state")
        captions = harness.captions
        # Laid out and following the live end (a loaded machine may need a few frames for it).
        at_bottom = lambda: captions.max_scroll_y > 0 and captions.scroll_y == captions.max_scroll_y  # noqa: E731
        await wait_for(pilot, at_bottom, "layout")
        bottom = captions.scroll_y
        wheel = MouseScrollUp(captions, 5, 5, 0, 0, 0, False, False, False)
        captions.post_message(wheel)  # Pilot has no wheel helper: the event a terminal sends
        await wait_for(pilot, lambda: not captions.follow, "leaving the live end")
        assert captions.scroll_y < bottom


async def test_first_run_offers_to_download_the_default_model(isolated_dirs: Path) -> None:
    from asr.errors import ModelNotFound
    from tui.widgets.dialogs import ConfirmScreen

    harness = Harness(conversation(1), held=True)
    downloaded: list[bool] = []

    def loader() -> FakeModel:
        if not downloaded:
            raise ModelNotFound("model 'q4_k_m' is not downloaded: run `voxcap models download q4_k_m`")
        return harness.model

    harness.runtime.model = None
    harness.runtime.model_loader = loader
    harness.runtime.downloader = lambda: downloaded.append(True)
    app = harness.app
    async with app.run_test(size=(110, 32)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the download offer")
        assert "not downloaded" in app.screen.question
        await pilot.press("y")
        await wait_for(pilot, lambda: app.asr is not None, "the model, once downloaded")
        assert downloaded == [True] and app.state != "error"


async def test_watchdog_warns_and_restarts_a_mute_stream(isolated_dirs: Path) -> None:
    from tests.test_worker import MuteSession

    model = FakeModel()
    model.stream = lambda delay_ms=480: model.sessions.append(MuteSession(delay_ms)) or model.sessions[-1]
    harness = Harness(speech_like(6.0), live=True, model=model, watchdog_s=1.0, journal=False)
    app = harness.app
    async with app.run_test(size=(110, 32)) as pilot:
        await wait_for(pilot, lambda: any("stream restarted" in e.text for e in harness.captions.entries), "mark")
        assert "restart" in harness.session.calls
        assert any("no text for" in str(n.message) for n in app._notifications)


async def test_a_config_that_cannot_be_saved_is_reported(isolated_dirs: Path) -> None:
    (isolated_dirs / "config").write_text("a file where the config directory should be")
    harness = Harness(conversation(1))
    app = harness.app
    async with app.run_test(size=(110, 32)) as pilot:
        await pilot.press("t")
        await wait_for(pilot, lambda: any(n.title == "Settings" for n in app._notifications), "the error toast")
        assert app.theme == "high-contrast"  # the change itself still applies
