"""Device selection, the PortAudio boundary (a fake library driven hard), and life without PortAudio.

The real PortAudio path is covered in test_sources_pulse.py; here a stand-in ``sounddevice``
lets us do what a real device will not on demand: call back faster than the loop drains,
report input overflows, refuse a rate, vanish, or stop calling.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tui.errors import AudioSourceError
from tui.sources import (
    FileSource,
    InputDevice,
    MicrophoneSource,
    PulseSource,
    import_sounddevice,
    resolve_input_device,
)
from tui.sources.system import parse_sources_short, resolve_system_source

DEVICES = [
    InputDevice(0, "HDA Intel PCH: ALC892 Analog (hw:0,0)", "ALSA", 2, 44100.0, False),
    InputDevice(3, "USB Audio Device: Mic (hw:1,0)", "ALSA", 1, 48000.0, False),
    InputDevice(7, "pulse", "ALSA", 32, 44100.0, False),
    InputDevice(8, "default", "ALSA", 32, 44100.0, True),
]


def test_input_device_by_index_name_substring_or_default():
    assert resolve_input_device(None, DEVICES).index == 8
    assert resolve_input_device(3, DEVICES).index == 3
    assert resolve_input_device("3", DEVICES).index == 3
    assert resolve_input_device("usb", DEVICES).index == 3
    assert resolve_input_device("PULSE", DEVICES).index == 7
    assert resolve_input_device("default", DEVICES).index == 8  # exact beats substring
    with pytest.raises(AudioSourceError, match=r"ambiguous .*0: HDA.*3: USB"):
        resolve_input_device("hw:", DEVICES)
    with pytest.raises(AudioSourceError, match=r"index 5 .*inputs: 0, 3, 7, 8.*voxcap devices"):
        resolve_input_device(5, DEVICES)
    with pytest.raises(AudioSourceError, match=r"'webcam'.*voxcap devices"):
        resolve_input_device("webcam", DEVICES)
    with pytest.raises(AudioSourceError, match="No audio input devices"):
        resolve_input_device(None, [])


SHORT = (
    "0\talsa_output.pci.analog-stereo.monitor\tmodule-alsa-card.c\ts16le 2ch 44100Hz\tSUSPENDED\n"
    "1\talsa_input.pci.analog-stereo\tmodule-alsa-card.c\ts16le 2ch 48000Hz\tRUNNING\n"
    "5\tbluez_output.headset.monitor\tmodule-bluez5-device.c\tfloat32le 1ch 16000Hz\tIDLE\n"
)


def test_pulse_sources_parse_and_resolve():
    sources = parse_sources_short(SHORT)
    assert [(s.index, s.rate, s.channels, s.is_monitor) for s in sources] == [
        (0, 44100, 2, True),
        (1, 48000, 2, False),
        (5, 16000, 1, True),
    ]
    assert sources[2].monitor_of == "bluez_output.headset"
    sink = "bluez_output.headset"
    assert resolve_system_source(None, sources, sink).index == 5  # the default sink's monitor
    assert resolve_system_source(None, sources, None).index == 0
    assert resolve_system_source("alsa_output.pci.analog-stereo", sources, sink).index == 0  # sink name
    assert resolve_system_source("#1", sources, sink).index == 1  # any source by index
    assert resolve_system_source("bluez", sources, sink).index == 5
    with pytest.raises(AudioSourceError, match="ambiguous"):
        resolve_system_source("output", sources, sink)
    with pytest.raises(AudioSourceError, match="no monitor sources"):
        resolve_system_source(None, [s for s in sources if not s.is_monitor], sink)
    assert isinstance(sources[0], PulseSource)


# -- a stand-in PortAudio ------------------------------------------------------------------


class FakePortAudioError(Exception):
    pass


class FakeStream:
    """Calls back from its own thread: ``blocks`` blocks of ``blocksize`` frames, as fast as asked."""

    instances: list[FakeStream] = []
    refuse_rates: set[int] = set()

    def __init__(self, *, device, samplerate, channels, dtype, blocksize, callback, finished_callback):
        if samplerate in self.refuse_rates:
            raise FakePortAudioError(f"Invalid sample rate [PaErrorCode -9997] ({samplerate})")
        self.samplerate, self.channels, self.blocksize = samplerate, channels, blocksize
        self.callback, self.finished_callback = callback, finished_callback
        self.plan: list[str] = []  # per block: "ok" | "overflow"; then what to do after
        self.after = "idle"  # "idle" (stop calling) | "finish" (stream ends, as on unplug)
        self.produced = 0
        self.closed = threading.Event()
        self.go = threading.Event()
        self.active = True
        FakeStream.instances.append(self)

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        self.go.wait(5)
        for kind in self.plan:
            if self.closed.is_set():
                return
            block = np.full((self.blocksize, self.channels), 0.25, dtype=np.float32)
            status = types.SimpleNamespace(input_overflow=kind == "overflow")
            self.callback(block, self.blocksize, None, status)
            self.produced += self.blocksize
        if self.after == "finish":
            self.active = False
            self.finished_callback()

    def close(self) -> None:
        self.closed.set()
        self.go.set()  # a thread still waiting to start ends now


@pytest.fixture
def fake_sounddevice(monkeypatch):
    module = types.ModuleType("sounddevice")
    module.PortAudioError = FakePortAudioError
    module.InputStream = FakeStream
    module.default = types.SimpleNamespace(device=[1, -1])
    module.query_hostapis = lambda: [{"name": "ALSA", "default_input_device": 1}]
    module.query_devices = lambda: [
        {
            "index": 0,
            "name": "Speakers",
            "hostapi": 0,
            "max_input_channels": 0,
            "default_samplerate": 48000.0,
        },
        {
            "index": 1,
            "name": "Fake Mic",
            "hostapi": 0,
            "max_input_channels": 2,
            "default_samplerate": 44100.0,
        },
    ]
    monkeypatch.setitem(sys.modules, "sounddevice", module)
    FakeStream.instances = []
    FakeStream.refuse_rates = set()
    yield module
    FakeStream.instances = []  # the streams hold their sources (and their soxr resamplers)


async def test_a_stalled_loop_cannot_make_the_callback_queue_grow(fake_sounddevice):
    source = MicrophoneSource("fake", block_ms=20, max_queue_s=0.2)
    await source.start()
    stream = FakeStream.instances[-1]
    assert (stream.samplerate, stream.channels, stream.blocksize) == (44100, 2, 882)
    stream.plan = ["ok"] * 200 + ["overflow"] * 3  # 4 s of audio, delivered at once
    stream.go.set()
    time.sleep(0.5)  # the event loop is blocked: nothing drains while the thread calls back
    assert source._blocks.qsize() <= 10  # max_queue_s / block_ms
    await asyncio.sleep(0.1)
    chunks = []
    while source.queued_s > 0:
        chunks.append(await source.__anext__())
    await source.stop()
    chunks += [c async for c in source]  # with the resampler's tail, flushed at stop
    delivered_s = sum(len(c.samples) for c in chunks) / 16_000
    assert source.overflows == 3
    # Everything produced was either delivered or counted as dropped (resampler delay aside).
    assert delivered_s <= 0.2 + 0.05
    assert delivered_s + source.dropped_s == pytest.approx(stream.produced / 44100, abs=0.002)
    assert source.dropped_s > 3.5
    assert all(np.allclose(c.samples[200:-200], 0.25, atol=1e-3) for c in chunks if len(c.samples) > 400)


async def test_a_refused_native_rate_falls_back_to_another(fake_sounddevice):
    FakeStream.refuse_rates = {44100}
    source = MicrophoneSource(1)
    await source.start()
    assert source.rate == 48000 and "48000 Hz" in source.describe()
    await source.stop()


async def test_a_device_that_refuses_every_rate_names_itself(fake_sounddevice):
    FakeStream.refuse_rates = {44100, 48000, 32000, 16000}
    with pytest.raises(AudioSourceError, match=r"Cannot open microphone 'Fake Mic' \(#1\).*-9997.*voxcap devices"):
        await MicrophoneSource("fake mic").start()


async def test_an_unplugged_device_ends_the_source_with_its_name(fake_sounddevice):
    source = MicrophoneSource(None)
    await source.start()
    stream = FakeStream.instances[-1]
    stream.plan, stream.after = ["ok"] * 5, "finish"
    stream.go.set()
    with pytest.raises(AudioSourceError, match=r"'Fake Mic' \(#1\) stopped.*voxcap devices"):
        async with asyncio.timeout(5):
            async for _ in source:
                pass
    assert source.closed and stream.closed.is_set()


async def test_a_device_that_stops_calling_back_is_reported(fake_sounddevice):
    source = MicrophoneSource(None, stall_timeout_s=0.3)
    await source.start()
    stream = FakeStream.instances[-1]
    stream.plan = ["ok"] * 3
    stream.go.set()
    with pytest.raises(AudioSourceError, match=r"no audio for .* s"):
        async with asyncio.timeout(5):
            async for _ in source:
                pass


async def test_by_default_a_quiet_device_is_not_an_error(fake_sounddevice):
    # A PulseAudio/PipeWire source may send nothing while nothing plays; unplugging ends the stream.
    source = MicrophoneSource(None)
    await source.start()
    stream = FakeStream.instances[-1]
    stream.plan = ["ok"] * 2
    stream.go.set()
    await asyncio.sleep(0.6)
    assert not source.closed and source.seconds_since_audio >= 0.4
    await source.stop()
    assert source.error is None


async def test_pausing_a_microphone_discards_without_counting_drops(fake_sounddevice):
    source = MicrophoneSource(None, max_queue_s=5.0)
    await source.start()
    source.pause()
    stream = FakeStream.instances[-1]
    stream.plan = ["ok"] * 20
    stream.go.set()
    await asyncio.sleep(0.3)
    assert source.queued_s == 0.0 and source.dropped_s == 0.0
    await source.stop()


# -- without PortAudio ---------------------------------------------------------------------

NO_PORTAUDIO = textwrap.dedent(
    """
    import importlib.abc, sys

    class NoPortAudio(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "sounddevice":
                raise OSError("PortAudio library not found")  # what sounddevice's import raises
            return None

    sys.meta_path.insert(0, NoPortAudio())
    """
)


def test_without_portaudio_mic_says_what_to_install(monkeypatch):
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)

    class NoPortAudio:
        def find_spec(self, name, path=None, target=None):
            if name == "sounddevice":
                raise OSError("PortAudio library not found")
            return None

    monkeypatch.setattr(sys, "meta_path", [NoPortAudio(), *sys.meta_path])
    with pytest.raises(AudioSourceError, match=r"apt install libportaudio2"):
        import_sounddevice()


async def test_without_portaudio_files_still_play_and_mic_fails_cleanly(monkeypatch, tmp_path):
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)

    class NoPortAudio:
        def find_spec(self, name, path=None, target=None):
            if name == "sounddevice":
                raise OSError("PortAudio library not found")
            return None

    monkeypatch.setattr(sys, "meta_path", [NoPortAudio(), *sys.meta_path])
    soundfile.write(tmp_path / "a.wav", np.zeros(1600, np.float32), 16_000)
    chunks = [c async for c in FileSource(tmp_path / "a.wav", realtime=False)]
    assert sum(len(c.samples) for c in chunks) == 1600
    source = MicrophoneSource()
    with pytest.raises(AudioSourceError, match="libportaudio2"):
        await source.start()
    assert source.closed


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
        check=False,
    )


def test_importing_the_sources_does_not_load_portaudio():
    done = run_python("import sys, tui.sources; assert 'sounddevice' not in sys.modules, 'loaded'")
    assert done.returncode == 0, done.stderr


def test_voxcap_devices_without_portaudio_or_a_sound_server(tmp_path):
    code = NO_PORTAUDIO + "from tui.cli import main; sys.exit(main(['devices']))"
    env_code = "import os; os.environ['PULSE_SERVER'] = 'unix:" + str(tmp_path / "none") + "'\n"
    done = run_python(env_code + code)
    assert done.returncode == 0, done.stderr
    assert "apt install libportaudio2" in done.stdout
    assert "Cannot reach the PulseAudio/PipeWire sound server" in done.stdout or "pactl" in done.stdout


# -- system audio without a sound server ------------------------------------------------------


async def test_system_audio_without_a_sound_server_says_so(monkeypatch, tmp_path):
    from tui.sources import SystemAudioSource

    monkeypatch.setenv("PULSE_SERVER", f"unix:{tmp_path / 'no-server'}")
    source = SystemAudioSource()
    with pytest.raises(AudioSourceError, match=r"Cannot reach the PulseAudio/PipeWire sound server.*pactl info"):
        await source.start()
    assert source.closed


async def test_system_audio_without_pulse_tools_says_what_to_install(monkeypatch, tmp_path):
    from tui.sources import SystemAudioSource

    monkeypatch.setenv("PATH", str(tmp_path))  # no pactl, no parec
    with pytest.raises(AudioSourceError, match=r"apt install pulseaudio-utils"):
        await SystemAudioSource().start()


async def test_stop_while_starting_leaves_nothing_open(tmp_path):
    soundfile.write(tmp_path / "a.wav", np.zeros(16_000, np.float32), 16_000)
    source = FileSource(tmp_path / "a.wav")
    starting = asyncio.create_task(source.start())
    await asyncio.sleep(0)  # start() is now inside its open
    await source.stop()
    await starting
    assert source.closed and source._file is None and source._pump_task is None
    assert [c async for c in source] == []
