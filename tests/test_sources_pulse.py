"""Real audio through a private PulseAudio server: paplay -> null sink -> our capture paths.

The oracle is the played file itself (resampled to 16 kHz the same way): what the microphone
path (PortAudio's ALSA ``pulse``/``default`` device, reading the default source = the null
sink's monitor) and the system path (``parec`` on the monitor) capture must correlate with it,
with the same energy and duration.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.pulse import MIC_SINK, SINK, PulseServer, best_alignment, overlap
from tui.audio import dominant_source, rms_dbfs
from tui.errors import AudioSourceError
from tui.sources import (
    AudioChunk,
    AudioSource,
    MicrophoneSource,
    MixedSource,
    SystemAudioSource,
    list_input_devices,
    list_monitor_sources,
    open_source,
    read_file_16k,
    refresh_portaudio,
)

pytestmark = [
    pytest.mark.audio,
    pytest.mark.skipif(shutil.which("paplay") is None, reason="paplay is not installed (pulseaudio-utils)"),
]




@pytest.fixture(scope="module")
def tone_wav(tmp_path_factory) -> Path:
    import soundfile

    rate = 44_100
    t = np.arange(rate) / rate
    path = tmp_path_factory.mktemp("tone") / "tone.wav"
    soundfile.write(path, (0.5 * np.sin(2 * np.pi * 660 * t)).astype(np.float32), rate)
    return path


async def capture_while_playing(
    source: AudioSource, server: PulseServer, plays: list[tuple[Path, str]]
) -> list[AudioChunk]:
    """Start ``source``, play each (wav, sink) in turn, keep capturing 0.4 s more, stop."""
    chunks: list[AudioChunk] = []

    async def consume() -> None:
        async for chunk in source:
            chunks.append(chunk)

    await source.start()
    reader = asyncio.create_task(consume())
    await asyncio.sleep(0.3)  # the stream is running before the sound starts
    for wav, sink in plays:
        player = server.play(wav, sink)
        async with asyncio.timeout(30):
            while player.poll() is None:
                await asyncio.sleep(0.05)
        assert player.returncode == 0, player.stderr.read() if player.stderr else ""
    await asyncio.sleep(0.4)
    async with asyncio.timeout(30):
        await source.stop()
        await reader
    return chunks




def assert_captured(chunks: list[AudioChunk], reference: np.ndarray) -> None:
    assert chunks, "no audio captured"
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after.offset == before.end  # contiguous: nothing dropped
    captured = np.concatenate([c.samples for c in chunks])
    assert captured.dtype == np.float32
    lag, correlation = best_alignment(captured, reference)
    assert correlation > 0.95, f"captured audio does not match what was played (r={correlation:.3f})"
    # A sink waking up may swallow the first few ms of a sound; the rest must all be there.
    assert lag > -0.1 * 16_000
    segment, ref = overlap(captured, reference, lag)
    assert len(segment) == len(ref) and len(ref) >= len(reference) - 0.1 * 16_000
    assert rms_dbfs(segment) == pytest.approx(rms_dbfs(ref), abs=1.0)  # same energy
    # Same duration: the loud part of the capture spans what the loud part of the file spans.
    loud = np.flatnonzero(np.abs(captured) > 0.05)
    loud_ref = np.flatnonzero(np.abs(reference) > 0.05)
    assert (loud[-1] - loud[0]) == pytest.approx(loud_ref[-1] - loud_ref[0], abs=0.1 * 16_000)
    # After the sound, the null sink's monitor carries silence (or nothing).
    assert rms_dbfs(captured[lag + len(reference) + 800 :]) < -60


def test_portaudio_lists_the_pulse_devices(portaudio_pulse):
    names = {device.name for device in list_input_devices()}
    assert {"pulse", "default"} <= names
    monitors = list_monitor_sources()
    assert f"{SINK}.monitor" in {m.name for m in monitors}
    assert {m.monitor_of for m in monitors} >= {SINK, MIC_SINK}


def test_voxcap_devices_lists_microphones_and_monitors(pulse_server):
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", "devices"],
        env=pulse_server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith(" *") and line.split()[2] == "default" for line in lines)  # * index name
    assert any(f"{SINK}.monitor" in line and line.startswith(" *#") for line in lines)  # default sink's
    assert any(f"{MIC_SINK}.monitor" in line and line.startswith("  #") for line in lines)
    assert "44100 Hz" in done.stdout and "48000 Hz" in done.stdout
    report = json.loads(
        subprocess.run(
            [sys.executable, "-m", "tui.cli", "devices", "--json"],
            env=pulse_server.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )
    assert report["inputs_error"] is None and report["monitors_error"] is None
    assert {d["name"] for d in report["inputs"]} >= {"pulse", "default"}


@pytest.mark.parametrize("device", [None, "pulse"])
async def test_microphone_captures_what_the_null_sink_plays(portaudio_pulse, speech_wav, device):
    source = MicrophoneSource(device)
    chunks = await capture_while_playing(source, portaudio_pulse, [(speech_wav, SINK)])
    assert source.device is not None and source.rate == 44_100  # the pulse device's native rate
    assert source.error is None and source.dropped_s == 0.0
    assert all(c.source == "mic" and set(c.levels) == {"mic"} for c in chunks)
    assert_captured(chunks, read_file_16k(speech_wav))


async def test_monitor_source_captures_what_the_sink_plays(pulse_server, speech_wav):
    source = open_source("system")  # default: the monitor of the default sink
    chunks = await capture_while_playing(source, pulse_server, [(speech_wav, SINK)])
    assert isinstance(source, SystemAudioSource)
    assert source.source is not None and source.source.name == f"{SINK}.monitor"
    assert source.source.rate == 48_000 and source.error is None and source.dropped_s == 0.0
    assert_captured(chunks, read_file_16k(speech_wav))


async def test_mixed_input_tags_each_stretch_with_its_source(portaudio_pulse, speech_wav, tone_wav):
    pulse_server = portaudio_pulse
    pulse_server.set_default_source(f"{MIC_SINK}.monitor")  # the "microphone" hears only MIC_SINK
    refresh_portaudio()  # PortAudio's ALSA "default" binds the server's default source when it initializes
    try:
        source = MixedSource([MicrophoneSource(None), SystemAudioSource(f"{SINK}.monitor")])
        chunks = await capture_while_playing(source, pulse_server, [(tone_wav, MIC_SINK), (speech_wav, SINK)])
    finally:
        pulse_server.set_default_source(f"{SINK}.monitor")
    assert source.error is None
    assert all(set(c.levels) == {"mic", "system"} and c.source == "mix" for c in chunks)
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after.offset == before.end
    dominant = [dominant_source(c.levels) for c in chunks]
    mic_s = sum(c.duration_s for c, d in zip(chunks, dominant, strict=True) if d == "mic")
    system_s = sum(c.duration_s for c, d in zip(chunks, dominant, strict=True) if d == "system")
    assert mic_s == pytest.approx(1.0, abs=0.15)  # the 1 s tone, on the microphone only
    assert system_s > 1.5  # the speech, on system audio only
    first_system = dominant.index("system")
    assert "system" not in dominant[: dominant.index("mic")]  # tone first, then speech
    assert "mic" not in dominant[first_system:]
    # The mix carries the speech itself, intact: every half second of the file is found in the
    # mix at the same shift (so nothing was lost or repeated between the two inputs' blocks).
    captured = np.concatenate([c.samples for c in chunks])
    reference = read_file_16k(speech_wav)
    shifts = set()
    for start in range(8000, len(reference) - 8000, 8000):
        lag, correlation = best_alignment(captured, reference[start : start + 8000])
        assert correlation > 0.9
        shifts.add(lag - start)
    assert max(shifts) - min(shifts) <= 2


async def test_a_sink_that_disappears_ends_the_system_source_with_a_clear_error(pulse_server):
    module = pulse_server.load_null_sink("voxcap_going_away")
    source = SystemAudioSource("voxcap_going_away")  # a sink's name picks its monitor
    await source.start()
    first = await asyncio.wait_for(source.__anext__(), 5)
    assert first.source == "system"
    pulse_server.unload_module(module)
    with pytest.raises(AudioSourceError, match=r"voxcap_going_away\.monitor.*voxcap devices"):
        async for _ in source:
            pass
    assert source.closed


async def test_a_sound_server_that_dies_ends_the_microphone_with_a_clear_error(portaudio_pulse):
    doomed = PulseServer()
    doomed.start()  # points this process at the second server until stop()
    try:
        refresh_portaudio()
        source = MicrophoneSource("pulse")  # no stall timeout: the stream itself must end
        await source.start()
        await asyncio.wait_for(source.__anext__(), 5)
        assert doomed.process is not None
        doomed.process.kill()
        with pytest.raises(AudioSourceError, match=r"'pulse'.*voxcap devices"):
            async with asyncio.timeout(15):
                async for _ in source:
                    pass
        assert source.closed
    finally:
        doomed.stop()
        refresh_portaudio()


async def test_a_live_input_nobody_reads_stays_bounded_and_counts_drops(pulse_server, speech_wav):
    # (A monitor of an idle null sink delivers nothing at all, so play something.)
    source = SystemAudioSource(f"{SINK}.monitor", max_queue_s=0.25)
    await source.start()
    player = pulse_server.play(speech_wav)
    seen_max = 0.0
    try:
        async with asyncio.timeout(10):  # a null sink's monitor lags by up to its 2 s latency
            while source.queued_s == 0.0:
                await asyncio.sleep(0.02)
        for _ in range(30):  # 1.5 s of a live monitor with no consumer
            await asyncio.sleep(0.05)
            seen_max = max(seen_max, source.queued_s)
    finally:
        player.terminate()
        player.wait()
    await source.stop()
    assert seen_max <= 0.25 + 1e-9
    assert source.dropped_s > 0.8
    kept = [chunk async for chunk in source]
    assert sum(c.duration_s for c in kept) <= 0.25 + 1e-9


async def test_unknown_devices_name_the_device_and_the_fix(portaudio_pulse):
    with pytest.raises(AudioSourceError, match=r"'no such mic'.*voxcap devices"):
        await MicrophoneSource("no such mic").start()
    with pytest.raises(AudioSourceError, match=r"index 99"):
        await MicrophoneSource(99).start()
    with pytest.raises(AudioSourceError, match=r"'nothing.monitor'.*voxcap devices"):
        await SystemAudioSource("nothing.monitor").start()
