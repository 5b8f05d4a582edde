"""Snapshots of the main screen in every built-in theme, narrow and wide (pytest-textual-snapshot).

The screen is filled with fixed content (segments, a mark, a partial line, gauges), so the
pictures do not depend on timing, memory use or the machine. Update after a deliberate change
with ``pytest tests/test_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from textual.pilot import Pilot

from tests.fake_engine import FakeInfo
from tui.app import VoxcapApp
from tui.messages import EngineStats, StreamMarked, TokensDecoded
from tui.runtime import CaptionRuntime, describe_model
from tui.segments import Segment
from tui.settings import Settings
from tui.widgets.dialogs import HelpScreen

WIDE = (120, 32)
NARROW = (64, 36)


class StillRuntime(CaptionRuntime):
    """Starts nothing: the test puts fixed content on screen."""

    def start(self, app: VoxcapApp) -> None:
        pass

    def persist(self, key: str, value: object) -> None:
        pass


def final(index: int, text: str, start: float, language: str | None, source: str = "mic") -> Segment:
    return Segment(index, text, start, start + 2.0, final=True, language=language, source=source)


def make_app(theme: str) -> VoxcapApp:
    settings = Settings(theme=theme, language="en", source="mix")
    runtime = StillRuntime(settings=settings, source_factory=lambda kind, device: None, journal_factory=None)
    return VoxcapApp(settings, runtime)


async def fill(pilot: Pilot) -> None:
    app: VoxcapApp = pilot.app  # type: ignore[assignment]
    app.query_one("StatusHeader").model_text = describe_model(FakeInfo(name="voxtral-mini-4b-q4_k_m"))
    stopped = threading.Event()
    stopped.set()
    app.asr = SimpleNamespace(send=lambda control: None, finished=stopped)  # type: ignore[assignment]
    app.state = "live"
    app.set_source_text("Mic: Built-in (48000 Hz → 16 kHz) + System: monitor of Speakers")
    app.set_levels({"mic": -23.0, "system": -41.0}, silent=False)
    segments = [
        final(0, "Good morning everyone, and thank you for joining the call today.", 0.4, "en"),
        final(1, "Let's start with a quick review of last week's numbers.", 3.1, "en", "system"),
        final(2, "Bonjour à tous, je vais présenter la partie française.", 6.0, "fr", "system"),
    ]
    app.on_tokens_decoded(TokensDecoded([], segments, None, "mic"))
    app.on_stream_marked(StreamMarked("delay", 8.9, "delay 480 → 960 ms", 960))
    partial = Segment(3, "After that we will look at the roadmap for the", 9.4, 11.0, source="mic")
    app.on_tokens_decoded(TokensDecoded([], [final(3, "Merci.", 9.1, None)], partial, "mic"))
    app.query_one("DelaySlider").value = 960
    app.on_engine_stats(
        EngineStats(
            step_p50_ms=31.0,
            step_p95_ms=44.0,
            lag_s=0.62,
            backlog_s=0.1,
            rtf=0.41,
            audio_s=11.0,
            dropped_s=0.0,
            delay_ms=960,
            memory={"rss": 812_400_000.0},
            pending_delay_ms=None,
        )
    )
    await pilot.pause()


@pytest.mark.parametrize("theme", ["dark", "light", "high-contrast"])
@pytest.mark.parametrize("size", [WIDE, NARROW], ids=["wide", "narrow"])
def test_main_screen(
    snap_compare, theme: str, size: tuple[int, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOXCAP_CONFIG_DIR", str(tmp_path))  # no user themes or config
    assert snap_compare(make_app(theme), terminal_size=size, run_before=fill)


def test_help_screen(snap_compare, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXCAP_CONFIG_DIR", str(tmp_path))

    async def open_help(pilot: Pilot) -> None:
        await fill(pilot)
        await pilot.press("question_mark")
        for _ in range(500):  # press() may return before the key is handled on a loaded machine
            if isinstance(pilot.app.screen, HelpScreen):
                break
            await pilot.pause(0.02)
        assert isinstance(pilot.app.screen, HelpScreen)

    assert snap_compare(make_app("dark"), terminal_size=WIDE, run_before=open_help)
